//! `wirewatch explain`'s arguments.
use clap::Args;

#[derive(Args)]
pub struct ExplainArgs {
    /// A kind as events and metrics name it (e.g. syn_unanswered); without one, every kind is
    /// listed.
    #[arg(value_name = "KIND")]
    pub(crate) kind: Option<String>,
}
