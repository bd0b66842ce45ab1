//! How the comparison programs print rates, shared by `compare` and `larger_than_memory`.

/// Operations per second, to three significant-ish digits: `1.23M/s`, `45.6k/s`, `789/s`.
pub fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k/s", r / 1e3)
    } else {
        format!("{r:.0}/s")
    }
}
