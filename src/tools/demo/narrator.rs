//! The demo's voice: lines on stdout stamped with the seconds elapsed since
//! the demo started (`[  3.2s]`), step headings, checks that passed or
//! failed, and dimmed details (the equivalent command, an answer's body).
//!
//! Colour (ANSI) only when asked, which the caller decides from whether
//! stdout is a terminal; piped output stays plain. Lines go through
//! `println!` so test harnesses capture them.

use std::time::{Duration, Instant};

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";

pub struct Narrator {
    start: Instant,
    colour: bool,
}

impl Narrator {
    pub fn new(colour: bool) -> Narrator {
        Narrator {
            start: Instant::now(),
            colour,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn paint(&self, style: &str, text: &str) -> String {
        if self.colour {
            format!("{style}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    fn line(&self, text: &str) {
        let stamp = format!("[{:>5.1}s]", self.elapsed().as_secs_f64());
        println!("{} {text}", self.paint(DIM, &stamp));
    }

    /// A step's heading: `3/11 Detection`.
    pub fn heading(&self, n: usize, total: usize, title: &str) {
        println!();
        self.line(&self.paint(BOLD, &format!("{n}/{total} {title}")));
    }

    /// What is happening.
    pub fn say(&self, text: &str) {
        self.line(&format!("  {text}"));
    }

    /// A check that held.
    pub fn ok(&self, text: &str) {
        self.line(&format!("  {} {text}", self.paint(GREEN, "✓")));
    }

    /// A check that did not hold.
    pub fn fail(&self, text: &str) {
        self.line(&format!(
            "  {} {}",
            self.paint(RED, "✗"),
            self.paint(RED, text)
        ));
    }

    /// Supporting detail: an equivalent command, an answer's body.
    pub fn detail(&self, text: &str) {
        for l in text.lines() {
            self.line(&format!("    {}", self.paint(DIM, l)));
        }
    }

    /// A line outside the timeline (summaries, interactive instructions).
    pub fn plain(&self, text: &str) {
        println!("{text}");
    }

    /// A highlighted line outside the timeline.
    pub fn banner(&self, text: &str, good: bool) {
        let style = if good { GREEN } else { RED };
        println!("{}", self.paint(&format!("{BOLD}{style}"), text));
    }

    /// A note that matters to the operator (a lesson of the incident).
    pub fn note(&self, text: &str) {
        self.line(&format!("  {} {text}", self.paint(YELLOW, "!")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paints_only_when_colour_is_on() {
        assert_eq!(Narrator::new(false).paint(GREEN, "ok"), "ok");
        assert_eq!(Narrator::new(true).paint(GREEN, "ok"), "\x1b[32mok\x1b[0m");
    }
}
