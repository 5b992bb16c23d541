//! Command-line flags of the benchmark examples, shared by them.

/// Removes `flag VALUE` from `args` and returns the value (None when the
/// flag is absent; an error when it has no value).
pub fn take(args: &mut Vec<String>, flag: &str) -> anyhow::Result<Option<String>> {
    match args.iter().position(|a| a == flag) {
        Some(i) if i + 1 < args.len() => {
            let value = args.remove(i + 1);
            args.remove(i);
            Ok(Some(value))
        }
        Some(_) => anyhow::bail!("{flag} needs a value"),
        None => Ok(None),
    }
}
