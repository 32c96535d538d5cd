//! One module per subcommand.

pub mod check;
pub mod plan;
pub mod run;
