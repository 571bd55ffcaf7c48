//! AFL++ harness (persistent mode) for [`kurir_fuzz::ws_frame`].

fn main() {
    afl::fuzz!(|data: &[u8]| kurir_fuzz::ws_frame::run(data));
}
