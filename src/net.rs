//! Network failures in words a person understands, for every HTTP client
//! here (Discord's API, an answer endpoint).

/// Why a connection could not be made, in a few words: "connection
/// refused", "no such host (...)", or the innermost cause.
pub fn connect_failure(e: &reqwest::Error) -> String {
    let mut innermost = None;
    let mut dns = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                std::io::ErrorKind::NetworkUnreachable => return "network unreachable".into(),
                std::io::ErrorKind::HostUnreachable => return "host unreachable".into(),
                std::io::ErrorKind::TimedOut => return "timed out connecting".into(),
                _ => {}
            }
        }
        let text = err.to_string();
        dns |= text.starts_with("dns error");
        innermost = Some(text);
        source = err.source();
    }
    match (innermost, dns) {
        (Some(text), true) => format!("no such host: {text}"),
        (Some(text), false) => text,
        (None, _) if e.is_timeout() => "timed out connecting".into(),
        (None, _) => e.to_string(),
    }
}
