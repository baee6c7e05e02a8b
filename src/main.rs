use std::process::ExitCode;

use clap::{Parser, Subcommand};
use domain_broker::config::Env;
use domain_broker::startup::Application;
use domain_broker::{catalog, db, telemetry};

#[derive(Parser)]
#[command(
    name = "domain-broker",
    version,
    about = "Open Service Broker for custom domains and ACME certificates"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations, then serve the OSB API.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the catalog as JSON.
    Catalog {
        /// The OSB API minor version to render for (2.<minor>).
        #[arg(long, default_value_t = 17)]
        api_minor: u32,
    },
}

#[actix_web::main]
async fn main() -> ExitCode {
    telemetry::init();
    let result = match Cli::parse().command {
        Command::Serve => serve().await,
        Command::Migrate => migrate().await,
        Command::Catalog { api_minor } => {
            println!("{:#}", catalog::catalog_json(api_minor));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("domain-broker: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn serve() -> Result<(), String> {
    let config = Env::process().config().map_err(|e| e.to_string())?;
    tracing::info!(?config, "starting");
    let app = Application::build(config)
        .await
        .map_err(|e| e.to_string())?;
    app.run_until_stopped().await.map_err(|e| e.to_string())
}

async fn migrate() -> Result<(), String> {
    let url = Env::process().database_url().map_err(|e| e.to_string())?;
    let applied = db::migrate(&url).await.map_err(|e| e.to_string())?;
    println!(
        "applied {} migration(s) to {}",
        applied.len(),
        url.redacted()
    );
    Ok(())
}
