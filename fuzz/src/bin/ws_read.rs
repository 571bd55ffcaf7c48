//! AFL++ harness (persistent mode) for [`kurir_fuzz::ws_read`].

fn main() {
    afl::fuzz!(|data: &[u8]| kurir_fuzz::ws_read::run(data));
}
