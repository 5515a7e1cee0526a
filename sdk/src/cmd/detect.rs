//! `detect`: print the detected spec as JSON and exit.

use worldland_provider_sdk::detect;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    public_ip: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (spec, source) = detect::detect_spec(args.public_ip, "/")?;
    eprintln!("GPUs found through {source:?}");
    println!("{}", serde_json::to_string_pretty(&spec)?);
    Ok(())
}
