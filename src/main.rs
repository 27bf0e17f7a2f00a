//! `migsim`: predict and measure VM live-migration blackouts.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
