//! The `[load]` section of the config file: what it may say, and the
//! settings stage one runs with (defaults and checks in one place).

use std::time::Duration;

use anyhow::bail;

use super::files::FileOptions;

/// The `[load]` table as written.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSection {
    concurrency: Option<usize>,
    requests_per_second: Option<u32>,
    request_timeout_secs: Option<u64>,
    patience_secs: Option<u64>,
    attachments: Option<String>,
    attachment_max_mb: Option<u64>,
    attachment_budget_mb: Option<u64>,
    attachment_concurrency: Option<usize>,
}

/// Stage one's settings.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Channels loaded at once.
    pub concurrency: usize,
    /// Discord's global limit for the bot: 50 unless Discord raised it.
    pub requests_per_second: u32,
    /// How long one request may take before it counts as failed.
    pub request_timeout: Duration,
    /// How long a request keeps being retried after failures before it is given up.
    pub patience: Duration,
    /// Which attachment files a load fetches, and within what limits.
    pub files: FileOptions,
}

impl LoadSection {
    /// The settings this section gives, its defaults filled in; a value no
    /// load can run with is an error that names its key.
    pub fn resolve(self) -> anyhow::Result<LoadSettings> {
        let concurrency = self.concurrency.unwrap_or(8);
        if concurrency == 0 {
            bail!("[load] concurrency must be at least 1");
        }
        let requests_per_second = self.requests_per_second.unwrap_or(50);
        if requests_per_second == 0 {
            bail!("[load] requests_per_second must be at least 1");
        }
        let request_timeout = self.request_timeout_secs.unwrap_or(30);
        let patience = self.patience_secs.unwrap_or(120);
        if request_timeout == 0 || patience == 0 {
            bail!("[load] request_timeout_secs and patience_secs must be at least 1");
        }
        let (request_timeout, patience) = (Duration::from_secs(request_timeout), Duration::from_secs(patience));
        let mut files = FileOptions::default();
        if let Some(mode) = &self.attachments {
            files.mode = mode.parse().map_err(|e: String| anyhow::anyhow!("[load] attachments: {e}"))?;
        }
        const MB: u64 = 1024 * 1024;
        match self.attachment_max_mb {
            Some(0) => bail!("[load] attachment_max_mb must be at least 1"),
            Some(mb) => files.max_file_bytes = mb.saturating_mul(MB),
            None => {}
        }
        match self.attachment_budget_mb {
            Some(0) => bail!("[load] attachment_budget_mb must be at least 1 (attachments = \"none\" fetches none)"),
            Some(mb) => files.budget_bytes = mb.saturating_mul(MB),
            None => {}
        }
        match self.attachment_concurrency {
            Some(0) => bail!("[load] attachment_concurrency must be at least 1"),
            Some(n) => files.concurrency = n,
            None => {}
        }
        files.timeout = request_timeout.max(Duration::from_secs(60));
        Ok(LoadSettings { concurrency, requests_per_second, request_timeout, patience, files })
    }
}
