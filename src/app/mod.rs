//! The desktop app (egui). Only this module tree imports egui; it calls the library for work.

#[derive(Default)]
pub struct StartOptions {}

pub fn run_app(_opts: StartOptions) -> anyhow::Result<()> {
    anyhow::bail!("app: not yet wired")
}
