//! Samples read from Prometheus' text exposition format, by metric name and
//! labels, so a test asserts on a counter or a gauge rather than on the text.

/// The sum of every sample of metric `name` whose labels include all of
/// `labels`; 0 when there is none (a counter never incremented is absent).
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .filter(|s| s.name == name && labels.iter().all(|l| s.labels.contains(&own(l))))
        .map(|s| s.value)
        .sum()
}

/// The value of the sample of metric `name` whose labels are exactly
/// `labels` (in any order), if there is one.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text)
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|l| s.labels.contains(&own(l)))
        })
        .map(|s| s.value)
}

/// How many series of metric `name` the text holds.
pub fn series(text: &str, name: &str) -> usize {
    samples(text).filter(|s| s.name == name).count()
}

fn own((k, v): &(&str, &str)) -> (String, String) {
    ((*k).to_owned(), (*v).to_owned())
}

/// One sample line: `name{label="value",...} 1.5`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Every line that parses as a sample; comments and anything else (an HTTP
/// head read off a raw connection, say) are passed over.
fn samples(text: &str) -> impl Iterator<Item = Sample> + '_ {
    text.lines().filter_map(|line| parse(line.trim()))
}

fn parse(line: &str) -> Option<Sample> {
    if line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    if name.is_empty() || !name.chars().all(valid) {
        return None;
    }
    let (labels, rest) = if line[name_end..].starts_with('{') {
        parse_labels(&line[name_end + 1..])?
    } else {
        (Vec::new(), &line[name_end..])
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `k="v",...}` (the text after `{`); answers the labels and what
/// follows the `}`. Values may hold `\\`, `\"` and `\n` escapes.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        s = &rest[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP obleth_requests_total Requests.
# TYPE obleth_requests_total counter
obleth_requests_total{model=\"m\",status=\"200\"} 3
obleth_requests_total{model=\"other\",status=\"404\"} 2
obleth_requests_total_created 9
obleth_up 1
obleth_quoted{path=\"a\\\"b,c}\",x=\"y\"} 4.5
HTTP/1.1 200 OK
content-length: 12
";

    #[test]
    fn sum_adds_the_samples_whose_labels_include_the_given_ones() {
        assert_eq!(sum(TEXT, "obleth_requests_total", &[]), 5.0);
        assert_eq!(sum(TEXT, "obleth_requests_total", &[("model", "m")]), 3.0);
        assert_eq!(sum(TEXT, "obleth_requests_total", &[("model", "x")]), 0.0);
        assert_eq!(sum(TEXT, "obleth_absent", &[]), 0.0);
        assert_eq!(sum(TEXT, "obleth_up", &[]), 1.0);
    }

    #[test]
    fn value_needs_exactly_the_given_labels_in_any_order() {
        let labels = [("status", "200"), ("model", "m")];
        assert_eq!(value(TEXT, "obleth_requests_total", &labels), Some(3.0));
        assert_eq!(
            value(TEXT, "obleth_requests_total", &[("model", "m")]),
            None
        );
        assert_eq!(value(TEXT, "obleth_up", &[]), Some(1.0));
        assert_eq!(value(TEXT, "obleth_requests", &[]), None);
    }

    #[test]
    fn escaped_label_values_are_read_whole() {
        let labels = [("path", "a\"b,c}"), ("x", "y")];
        assert_eq!(value(TEXT, "obleth_quoted", &labels), Some(4.5));
    }

    #[test]
    fn series_counts_one_metric_only() {
        assert_eq!(series(TEXT, "obleth_requests_total"), 2);
    }
}
