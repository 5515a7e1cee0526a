//! One module per `worldland-provider-sdk` subcommand: its clap arguments and its `run`.

pub mod detect;
pub mod install;
pub mod run;
pub mod status;
pub mod uninstall;

/// Whether this machine has a working `systemctl`.
fn has_systemctl() -> bool {
    std::process::Command::new("systemctl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}
