//! `fake-discord`: the loopback fake Discord server as a process, for the
//! demo and the benchmarks. Prints one JSON line (base URL, token, guild and
//! channel ids) on stdout, then serves until Ctrl-C.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fake_discord::{FakeDiscord, Limits, World, WorldSpec};

/// Serve a generated guild on loopback with Discord's paging and rate limits.
#[derive(Debug, Parser)]
#[command(name = "fake-discord", version, about)]
struct Args {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Plain text channels to generate.
    #[arg(long, default_value_t = 4)]
    channels: usize,
    /// Messages per text channel.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Also generate threads, a forum, voice chat, unreadable channels, and
    /// role-gated channels with members of each kind (printed as "members").
    #[arg(long)]
    full_cast: bool,
    /// Requests per bucket window, per channel.
    #[arg(long, default_value_t = 5)]
    per_route: u32,
    /// Bucket window in milliseconds.
    #[arg(long, default_value_t = 1000)]
    window_ms: u64,
    /// Requests per second for the whole bot.
    #[arg(long, default_value_t = 50)]
    global: u32,
    /// Pretend the MESSAGE_CONTENT intent is not granted.
    #[arg(long)]
    no_intent: bool,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// On exit, write every request (arrival ms, status, outcome, path) as JSON lines here.
    #[arg(long, value_name = "FILE")]
    request_log: Option<std::path::PathBuf>,
    /// Instead of serving: write the first text channel's history as a
    /// DiscordChatExporter JSON export to FILE (for the import benchmark).
    #[arg(long, value_name = "FILE")]
    write_dce_json: Option<std::path::PathBuf>,
    /// Share of people's messages that carry one attachment (0 to 1; default:
    /// the generator's, about 3%). Their files are served by the CDN route.
    #[arg(long, value_name = "SHARE")]
    image_share: Option<f64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let spec = WorldSpec {
        seed: args.seed,
        text_channels: args.channels,
        messages_per_channel: args.messages,
        extras: args.full_cast,
        ..WorldSpec::plain(args.channels, args.messages)
    };
    let mut world = World::generate(&spec);
    if args.no_intent {
        world.app_flags = 0;
    }
    if let Some(share) = args.image_share {
        anyhow::ensure!((0.0..=1.0).contains(&share), "--image-share must be between 0 and 1");
        let users: Vec<bool> = world.users.iter().map(|u| u.bot).collect();
        for c in world.guilds.iter_mut().flat_map(|g| g.channels.iter_mut()) {
            for m in &mut c.messages {
                // A fixed hash of the id: the same messages for the same share.
                let roll = (m.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / (1u64 << 24) as f64;
                let person = m.kind == 0 && !m.webhook && !users[m.author as usize];
                m.attachments = u8::from(person && roll < share);
            }
        }
    }
    if let Some(path) = &args.write_dce_json {
        let guild = &world.guilds[0];
        let channel = guild.channels.iter().max_by_key(|c| c.messages.len()).expect("a channel");
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        fake_discord::dce::write_json(&mut out, &world, guild, channel, &channel.messages)?;
        std::io::Write::flush(&mut out)?;
        return Ok(());
    }
    let cast = (args.full_cast && args.channels > 0).then(|| world.add_access_matrix());
    let limits = Limits {
        per_route: args.per_route,
        window: Duration::from_millis(args.window_ms),
        global_per_second: args.global,
        ..Limits::default()
    };
    let guild = &world.guilds[0];
    let info = serde_json::json!({
        "base_url": "",
        "token": world.token,
        "guild_id": guild.id.to_string(),
        "channels": guild.channels.iter().filter(|c| !c.messages.is_empty())
            .map(|c| serde_json::json!({"id": c.id.to_string(), "name": c.name, "messages": c.messages.len()}))
            .collect::<Vec<_>>(),
        "messages": guild.channels.iter().map(|c| c.messages.len()).sum::<usize>(),
    });
    let mut info = info;
    if let Some(c) = cast {
        info["plain_member_id"] = c.plain.to_string().into();
        info["members"] = serde_json::json!({
            "owner": c.owner.to_string(), "admin": c.admin.to_string(), "moderator": c.moderator.to_string(),
            "staff": c.staff.to_string(), "denied": c.denied.to_string(), "thread_member": c.thread_member.to_string(),
            "plain": c.plain.to_string(), "outsider": c.outsider.to_string(),
        });
    }
    let server = FakeDiscord::start_on(([127, 0, 0, 1], args.port).into(), world, limits).await?;
    info["base_url"] = server.base_url().into();
    println!("{info}");
    tokio::signal::ctrl_c().await?;
    let requests = server.requests();
    let provoked = requests.iter().filter(|r| r.provoked_429()).count();
    eprintln!("served {} requests, {provoked} of them 429s provoked by the client", requests.len());
    if let Some(path) = &args.request_log {
        let mut out = String::new();
        for r in &requests {
            let line = serde_json::json!({"seq": r.seq, "at_ms": r.at_ms, "status": r.status, "outcome": r.outcome,
                                          "path": r.path, "query": r.query});
            out.push_str(&line.to_string());
            out.push('\n');
        }
        std::fs::write(path, out)?;
    }
    server.shutdown().await;
    Ok(())
}
