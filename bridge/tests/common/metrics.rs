//! Reading a Prometheus text exposition, the bridge's `/metrics`.
// Each test binary compiles this module on its own and uses only part of it; what one binary
// leaves unused is dead code there, though another uses it.
#![allow(dead_code)]

/// A Prometheus text exposition.
#[derive(Debug, Clone)]
pub(crate) struct Metrics(pub(crate) String);

impl Metrics {
    /// Sum of every sample of `name` whose labels include all of `labels`.
    pub(crate) fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(parse_sample)
            .filter(|(n, ls, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, value)| value)
            .sum()
    }
}

/// A sample's name, labels and value.
pub(crate) type Sample = (String, Vec<(String, String)>, f64);

/// `name{k="v",...} value [timestamp]` into its parts (label values unescaped).
pub(crate) fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        let mut chars = rest.char_indices().skip(1);
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => continue,
                _ => {}
            }
            let mut key = String::from(c);
            loop {
                match chars.next()?.1 {
                    '=' => break,
                    c => key.push(c),
                }
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((key, value));
        };
        rest = &rest[end + 1..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name.to_owned(), labels, value))
}

impl Metrics {
    /// The exposition of a bridge running in this process.
    pub(crate) fn of(bridge: &bridge::Bridge) -> Self {
        Self(bridge.app().metrics.render())
    }
}
