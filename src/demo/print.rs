//! The one printer every line of the demo goes through: the time since the demo started, who
//! acts, and what happened.

use std::fmt::Display;
use std::time::Instant;

/// Width of the time column (`  12.3s  `), so details line up under the text.
const TIME_WIDTH: usize = 9;

/// Prints the journey as it happens.
#[derive(Debug)]
pub(crate) struct Printer {
    start: Instant,
}

impl Printer {
    /// A printer whose clock starts now.
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    /// A step of the story: `   1.2s  dana: lead → mql (…)`.
    pub(crate) fn say(&self, who: &str, what: impl Display) {
        let elapsed = self.start.elapsed().as_secs_f64();
        println!("{elapsed:>7.1}s  {who}: {what}");
    }

    /// A detail of the step before, indented under its text.
    pub(crate) fn detail(&self, what: impl Display) {
        println!("{:width$}  {what}", "", width = TIME_WIDTH);
    }

    /// The start of a new part of the story.
    pub(crate) fn part(&self, title: impl Display) {
        println!();
        println!("{title}");
    }

    /// A line as it is (tables, listings).
    pub(crate) fn line(&self, text: impl Display) {
        println!("{text}");
    }
}
