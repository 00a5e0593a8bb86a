//! A scraped `/metrics` page, parsed.

/// A `/metrics` scrape, parsed with `prometheus-parse`.
pub struct Metrics {
    pub text: String,
    pub scrape: prometheus_parse::Scrape,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        use prometheus_parse::LineInfo;
        for line in text.lines() {
            let known = matches!(
                LineInfo::parse(line),
                LineInfo::Doc { .. } | LineInfo::Type { .. } | LineInfo::Sample { .. }
            );
            assert!(known, "not Prometheus text: {line:?} in\n{text}");
        }
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap();
        Metrics {
            text: text.to_owned(),
            scrape,
        }
    }

    pub(super) fn sample(&self, name: &str) -> &prometheus_parse::Sample {
        self.scrape
            .samples
            .iter()
            .find(|sample| sample.metric == name)
            .unwrap_or_else(|| panic!("no {name} in\n{}", self.text))
    }

    /// Asserts that each of `lines` is a whole line of the page.
    pub fn assert_lines(&self, lines: &[&str]) {
        for line in lines {
            assert!(
                self.text.lines().any(|l| l == *line),
                "{line:?} missing in:\n{}",
                self.text
            );
        }
    }

    /// The value of a counter, gauge or untyped sample.
    pub fn value(&self, name: &str) -> f64 {
        use prometheus_parse::Value;
        match &self.sample(name).value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is {other:?}"),
        }
    }

    /// The value of a sample with this label.
    pub fn labelled(
        &self,
        name: &str,
        label: &str,
        value: &str,
    ) -> Option<&prometheus_parse::Sample> {
        self.scrape
            .samples
            .iter()
            .find(|sample| sample.metric == name && sample.labels.get(label) == Some(value))
    }

    /// Observations of a histogram (its `+Inf` bucket), after checking its
    /// buckets are cumulative and end with `+Inf` equal to `_count`.
    pub fn histogram_count(&self, name: &str) -> f64 {
        let prometheus_parse::Value::Histogram(buckets) = &self.sample(name).value else {
            panic!("{name} is not a histogram in\n{}", self.text);
        };
        for pair in buckets.windows(2) {
            assert!(pair[0].less_than < pair[1].less_than, "{name}: {buckets:?}");
            assert!(pair[0].count <= pair[1].count, "{name}: {buckets:?}");
        }
        let last = buckets.last().unwrap();
        assert!(last.less_than.is_infinite(), "{name}: {buckets:?}");
        assert_eq!(self.value(&format!("{name}_count")), last.count);
        last.count
    }
}
