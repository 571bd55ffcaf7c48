//! Kurir's wire types: the public gRPC API (`kurir.v1`) and the internal envelope
//! (`kurir.internal.v1`) that travels over NATS and is kept in inboxes. No logic lives here.
#![forbid(unsafe_code)]

/// The public API.
pub mod v1 {
    tonic::include_proto!("kurir.v1");
}

/// Dispatcher ↔ gateway messages.
pub mod internal {
    pub mod v1 {
        tonic::include_proto!("kurir.internal.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Kurir proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kurir_descriptor.bin"));
