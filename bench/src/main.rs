//! `blipmq-bench`: filled in by the benchmark issue.
fn main() {
    eprintln!("blipmq-bench: not implemented yet (see the benchmark issue)");
    std::process::exit(2);
}
