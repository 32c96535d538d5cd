//! One module per subcommand.

pub mod check;
pub mod doctor;
pub mod image;
pub mod plan;
pub mod run;
