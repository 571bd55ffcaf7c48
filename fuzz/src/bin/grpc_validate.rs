//! AFL++ harness (persistent mode) for [`kurir_fuzz::grpc_validate`].

fn main() {
    afl::fuzz!(|data: &[u8]| kurir_fuzz::grpc_validate::run(data));
}
