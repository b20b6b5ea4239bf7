//! `obleth-migrator`: parses the command line and exits with the documented code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = obleth_migrator::Cli::parse();
    obleth_config::telemetry::init(
        cli.log_format,
        "warn,obleth_config=info,obleth_migrator=info",
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(obleth_migrator::exit::ERROR);
        }
    };
    let code = runtime.block_on(obleth_migrator::run(cli));
    ExitCode::from(code)
}
