//! Downloading attachment files from Discord's CDN.
//!
//! Separate from the API client on purpose: CDN requests never carry the bot
//! token, are not counted against the API's rate limits, and go only to
//! Discord's CDN hosts (or to the host of the configured API base, which is
//! where the fake server serves its files); a link to anywhere else (an
//! edited export, say) is refused, never requested. A download is read into
//! memory up to a size cap and abandoned as soon as it passes it, whatever
//! the server announced.
//!
//! Links are signed and expire (`ex`, hex Unix seconds); [`needs_refresh`]
//! says when one should be renewed through the API first
//! (`Client::refresh_urls`).

use std::time::Duration;

use futures::StreamExt;
use rand::Rng;

/// Hosts that serve Discord attachment files.
const CDN_HOSTS: &[&str] = &["cdn.discordapp.com", "media.discordapp.net"];

/// Tries per download for transient failures (5xx, dropped connections).
const TRIES: u32 = 4;

/// Why a download gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum CdnError {
    /// 403/404: expired, or the file is gone.
    #[error("the CDN answered {0} (expired link, or the file is gone)")]
    NotFound(u16),
    #[error("larger than the {cap}-byte cap")]
    TooLarge { cap: u64 },
    #[error("not a Discord CDN link ({0})")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

/// A downloader for attachment files.
#[derive(Clone)]
pub struct Cdn {
    http: reqwest::Client,
    /// `host[:port]` of the API base: also trusted to serve files.
    api_host: Option<String>,
}

impl Cdn {
    pub fn new(api_base: &str, timeout: Duration) -> Result<Cdn, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            // A redirect could lead anywhere; the CDN does not redirect.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let api_host = reqwest::Url::parse(api_base).ok().and_then(|u| host_port(&u));
        Ok(Cdn { http, api_host })
    }

    /// The link, if it may be requested.
    pub fn check(&self, url: &str) -> Result<reqwest::Url, CdnError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| CdnError::Refused(format!("{url:?} is not a URL")))?;
        let allowed = match parsed.scheme() {
            "https" => parsed.host_str().is_some_and(|h| CDN_HOSTS.contains(&h)),
            _ => false,
        } || host_port(&parsed).is_some_and(|h| Some(&h) == self.api_host.as_ref());
        if !allowed || !matches!(parsed.scheme(), "http" | "https") {
            return Err(CdnError::Refused(parsed.host_str().unwrap_or("no host").to_owned()));
        }
        Ok(parsed)
    }

    /// Downloads a file of at most `cap` bytes, retrying transient failures.
    pub async fn download(&self, url: &str, cap: u64) -> Result<Vec<u8>, CdnError> {
        let parsed = self.check(url)?;
        let mut tries = 0;
        loop {
            tries += 1;
            match self.once(parsed.clone(), cap).await {
                Err(CdnError::Failed(why)) if tries < TRIES => {
                    let wait = Duration::from_millis(250 << tries) + rand_jitter();
                    tracing::debug!("attachment download failed ({why}); retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    async fn once(&self, url: reqwest::Url, cap: u64) -> Result<Vec<u8>, CdnError> {
        let resp = self.http.get(url).send().await.map_err(|e| CdnError::Failed(super::transport_error(&e)))?;
        let status = resp.status().as_u16();
        match status {
            200 => {}
            403 | 404 | 410 => return Err(CdnError::NotFound(status)),
            _ => return Err(CdnError::Failed(format!("HTTP {status}"))),
        }
        if resp.content_length().is_some_and(|n| n > cap) {
            return Err(CdnError::TooLarge { cap });
        }
        let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0).min(cap) as usize);
        let mut stream = resp.bytes_stream();
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|e| CdnError::Failed(super::transport_error(&e)))?;
            if (body.len() + piece.len()) as u64 > cap {
                return Err(CdnError::TooLarge { cap });
            }
            body.extend_from_slice(&piece);
        }
        Ok(body)
    }
}

fn rand_jitter() -> Duration {
    Duration::from_millis(rand::thread_rng().gen_range(0..100))
}

fn host_port(u: &reqwest::Url) -> Option<String> {
    Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
}

/// Whether a link should be renewed before use: it has no expiry (`ex`),
/// or expires within `margin` of `now` (Unix seconds).
pub fn needs_refresh(url: &str, now: u64, margin: u64) -> bool {
    let Ok(parsed) = reqwest::Url::parse(url) else { return false };
    let ex = parsed.query_pairs().find(|(k, _)| k == "ex").and_then(|(_, v)| u64::from_str_radix(&v, 16).ok());
    ex.is_none_or(|ex| ex <= now + margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_discord_cdn_hosts_and_the_api_host_are_requested() {
        let cdn = Cdn::new("http://127.0.0.1:4000", Duration::from_secs(1)).unwrap();
        assert!(cdn.check("https://cdn.discordapp.com/attachments/1/2/a.png?ex=1").is_ok());
        assert!(cdn.check("https://media.discordapp.net/attachments/1/2/a.png").is_ok());
        assert!(cdn.check("http://127.0.0.1:4000/attachments/1/2/a.png").is_ok());
        for bad in [
            "http://cdn.discordapp.com/attachments/1/2/a.png", // not https
            "https://cdn.discordapp.com.evil.example/a.png",
            "http://127.0.0.1:4001/attachments/1/2/a.png",
            "http://169.254.169.254/latest/meta-data",
            "file:///etc/passwd",
            "exports/media/a.png",
        ] {
            assert!(matches!(cdn.check(bad), Err(CdnError::Refused(_))), "{bad}");
        }
    }

    #[test]
    fn links_are_renewed_when_they_expire_soon_or_say_nothing() {
        let now = 0x6700_0000;
        let url = |ex: u64| format!("https://cdn.discordapp.com/attachments/1/2/a.png?ex={ex:x}&is=1&hm=ab");
        assert!(!needs_refresh(&url(now + 3600), now, 300));
        assert!(needs_refresh(&url(now + 100), now, 300));
        assert!(needs_refresh(&url(now - 1), now, 300));
        assert!(needs_refresh("https://cdn.discordapp.com/attachments/1/2/a.png", now, 300));
    }
}
