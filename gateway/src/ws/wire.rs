//! RFC 6455 framing: the codec lives in `kurir-wire` (checked by the Autobahn suite);
//! what we send is framed there once, and what clients send is judged there.

pub use kurir_wire::frame::*;
