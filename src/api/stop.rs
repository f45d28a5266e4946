//! The stop-string scanner: a pure function of the decoded text, run on the HTTP tasks. The
//! engine stops on token ids only; stop strings are found here, across token boundaries.

/// What one push of text gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// Text that is safe to send (may be empty while a possible stop prefix is held back).
    Emit(String),
    /// A stop string was found: the text before it; everything after is dropped.
    Stopped(String),
}

/// Holds back only a suffix that could begin a stop string.
#[derive(Debug, Clone, Default)]
pub struct StopScanner {
    stops: Vec<String>,
    held: String,
}

impl StopScanner {
    /// Empty stop strings are ignored.
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> Scan {
        self.held.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(pos) = first {
            let out = self.held[..pos].to_string();
            self.held.clear();
            return Scan::Stopped(out);
        }
        let keep = self.holdback();
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        Scan::Emit(out)
    }

    /// The held text, at the end of a choice.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Bytes of the longest suffix of `held` that is a proper prefix of some stop string.
    fn holdback(&self) -> usize {
        let mut best = 0;
        for (start, _) in self.held.char_indices() {
            let suffix = &self.held[start..];
            if self
                .stops
                .iter()
                .any(|s| s.len() > suffix.len() && s.starts_with(suffix))
            {
                best = best.max(suffix.len());
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut sc = StopScanner::new(&stops);
        let mut out = String::new();
        for p in pieces {
            match sc.push(p) {
                Scan::Emit(s) => out.push_str(&s),
                Scan::Stopped(s) => {
                    out.push_str(&s);
                    return (out, true);
                }
            }
        }
        out.push_str(&sc.flush());
        (out, false)
    }

    #[test]
    fn a_stop_split_across_tokens_is_found_and_excluded() {
        assert_eq!(
            run(&["END"], &["abc E", "N", "D more"]),
            ("abc ".into(), true)
        );
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), true));
    }

    #[test]
    fn only_a_possible_prefix_is_held_back() {
        let mut sc = StopScanner::new(&["END".to_string()]);
        assert_eq!(sc.push("hello E"), Scan::Emit("hello ".into()));
        assert_eq!(sc.push("x"), Scan::Emit("Ex".into()));
        assert_eq!(sc.push("no stop"), Scan::Emit("no stop".into()));
    }

    #[test]
    fn a_false_start_is_released_and_the_earliest_stop_wins() {
        assert_eq!(run(&["ab"], &["a", "a", "c"]), ("aac".into(), false));
        assert_eq!(run(&["yz", "x"], &["wxyz"]), ("w".into(), true));
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        assert_eq!(run(&["。"], &["你好", "。再见"]), ("你好".into(), true));
        assert_eq!(run(&["🙂!"], &["a🙂", "b"]), ("a🙂b".into(), false));
        assert_eq!(run(&[], &["x"]), ("x".into(), false));
    }
}
