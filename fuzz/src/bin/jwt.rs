//! AFL++ harness (persistent mode) for [`kurir_fuzz::jwt`].

fn main() {
    afl::fuzz!(|data: &[u8]| kurir_fuzz::jwt::run(data));
}
