//! AFL++ harness (persistent mode) for [`kurir_fuzz::http_upgrade`].

fn main() {
    afl::fuzz!(|data: &[u8]| kurir_fuzz::http_upgrade::run(data));
}
