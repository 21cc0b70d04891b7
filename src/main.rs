fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(planrun::cli::main())
}
