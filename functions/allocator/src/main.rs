//! `allocator` as a queue consumer (the container deployment).

fn main() -> std::process::ExitCode {
    worldland_runtime::container::main(allocator::worker)
}
