//! AFL++ harness (persistent mode) for [`kurir_fuzz::client_frame`].

fn main() {
    afl::fuzz!(|data: &[u8]| kurir_fuzz::client_frame::run(data));
}
