//! The soak scenario itself: two nodes, Redis, the clients, the posts and the outage.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rooms_testkit::redis_server::RedisServer;
use tokio::sync::{Semaphore, watch};

use super::deliveries::{Window, tally_deliveries};
use super::outcome::{Check, Outcome, Sample, kib, per_connection};
use super::{
    JOIN_CONCURRENCY, NO_NOTICE_WINDOW, Options, POST_IN_FLIGHT, RSS_GROWTH_TOLERANCE, SETTLE,
    WINDOW_AFTER, WINDOW_BEFORE,
};
use crate::bench::thousands;
use crate::load::{self, ClientReport, ClientSpec, Node, PostPlan, ProcSample, Tally};

pub(super) async fn soak(options: &Options, bin: &Path) -> Result<Outcome, String> {
    let redis = RedisServer::start()
        .await
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let url = redis.url();
    eprintln!("redis-server on {url} (pid {:?})", redis.pid());
    let mut nodes = [
        Node::start(bin, "soak-a", &url, options.clients + 16)?,
        Node::start(bin, "soak-b", &url, options.clients + 16)?,
    ];
    eprintln!(
        "nodes: {} on {} (pid {}), {} on {} (pid {})",
        nodes[0].name,
        nodes[0].addr,
        nodes[0].pid(),
        nodes[1].name,
        nodes[1].addr,
        nodes[1].pid()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = sample(&nodes)?;

    // Clients: client i in room i % rooms, on node (i / rooms) % 2, so every
    // room has members on both nodes.
    let base = Instant::now();
    let tally = Tally::new()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let joins = Arc::new(Semaphore::new(JOIN_CONCURRENCY));
    let room_names: Vec<String> = (0..options.rooms).map(|r| format!("soak-{r}")).collect();
    let mut per_node = [0usize; 2];
    let mut clients = Vec::with_capacity(options.clients);
    for index in 0..options.clients {
        let room = index % options.rooms;
        let node = (index / options.rooms) % 2;
        per_node[node] += 1;
        clients.push(load::spawn_client(
            ClientSpec {
                index,
                addr: nodes[node].addr,
                room: room as u64,
                room_name: room_names[room].clone(),
                rooms: options.rooms as u64,
            },
            tally.clone(),
            base,
            joins.clone(),
            stop_rx.clone(),
        ));
    }
    let join_limit = Duration::from_secs(60 + options.clients as u64 / 50);
    load::wait_ready(&tally, options.clients, join_limit).await?;
    eprintln!(
        "{} clients joined in {:.1?}",
        options.clients,
        base.elapsed()
    );

    // Posting, the outage and sampling run side by side.
    let post_start = Instant::now();
    let post_start_us = load::micros_since(base);
    let count = (options.rate * options.duration as f64).round() as u64;
    let poster = tokio::spawn(load::post(
        PostPlan {
            nodes: nodes.iter().map(|node| node.addr).collect(),
            rooms: room_names.clone(),
            count,
            rate: Some(options.rate),
            in_flight: POST_IN_FLIGHT,
        },
        base,
    ));
    let kill_at = options.kill_at();
    let outage = Duration::from_secs(options.outage);
    let outage_task = tokio::spawn(async move {
        let mut redis = redis;
        tokio::time::sleep(kill_at).await;
        let pid = redis.pid();
        redis
            .kill()
            .map_err(|e| format!("cannot kill redis-server: {e}"))?;
        let killed_us = load::micros_since(base);
        eprintln!(
            "t={:.1}s: redis-server (pid {pid:?}) killed",
            post_start.elapsed().as_secs_f64()
        );
        tokio::time::sleep(outage).await;
        redis
            .restart()
            .await
            .map_err(|e| format!("cannot restart redis-server: {e}"))?;
        let restarted_us = load::micros_since(base);
        eprintln!(
            "t={:.1}s: redis-server restarted (pid {:?})",
            post_start.elapsed().as_secs_f64(),
            redis.pid()
        );
        Ok::<_, String>((redis, killed_us, restarted_us))
    });
    let mut samples = Vec::new();
    let start_sample = sample(&nodes)?;
    let own_start = ProcSample::read(std::process::id()).unwrap_or_default();
    samples.push(Sample {
        at: 0.0,
        nodes: start_sample.nodes,
    });
    let every = options.sample_every();
    let mut next = tokio::time::Instant::now() + every;
    // A hard bound in case posting stalls.
    let hard_limit = tokio::time::Instant::now() + Duration::from_secs(options.duration * 3 + 60);
    let mut poster = poster;
    let records = loop {
        tokio::select! {
            posted = &mut poster => {
                break posted.map_err(|e| format!("the poster failed: {e}"))??;
            }
            () = tokio::time::sleep_until(next) => {
                next += every;
                let mut now = sample(&nodes)?;
                now.at = post_start.elapsed().as_secs_f64();
                samples.push(now);
            }
            () = tokio::time::sleep_until(hard_limit) => {
                return Err("posting did not finish in three times --duration".to_owned());
            }
        }
    };
    let (redis, killed_us, restarted_us) = outage_task
        .await
        .map_err(|e| format!("the outage task failed: {e}"))??;
    let posted_us = load::micros_since(base);
    eprintln!(
        "posted {} messages in {:.1} s",
        records.len(),
        (posted_us - post_start_us) as f64 / 1e6
    );

    // Every message to every member of its room bounds the drain (a refused
    // post may still have reached its node's own members); usually it ends
    // when nothing more arrives for a while.
    let members = members_per_room(options);
    let most: u64 = records
        .iter()
        .map(|r| members[(r.seq % options.rooms as u64) as usize])
        .sum();
    let delivered = load::drain(
        &tally,
        most,
        Duration::from_secs(3),
        Duration::from_secs(60),
    )
    .await;
    let drained_us = load::micros_since(base);
    let mut last = sample(&nodes)?;
    last.at = post_start.elapsed().as_secs_f64();
    let own_cpu = ProcSample::read(std::process::id())
        .unwrap_or_default()
        .cpu_secs
        - own_start.cpu_secs;
    samples.push(last);
    let _ = stop_tx.send(true);
    let mut reports = Vec::with_capacity(clients.len());
    for client in clients {
        reports.push(
            client
                .await
                .map_err(|e| format!("a client task failed: {e}"))?,
        );
    }
    let alive = [nodes[0].is_running(), nodes[1].is_running()];
    let logs = nodes
        .iter()
        .map(|node| format!("--- {} log (last lines):\n{}", node.name, node.log_tail(5)))
        .collect();
    drop(redis);

    let latency = tally.latency()?;
    let first_notice_us = tally.first_notice_us.load(Ordering::Relaxed);
    let last_notice_us = tally.last_notice_us.load(Ordering::Relaxed);
    let window = Window {
        start: killed_us.saturating_sub(micros(WINDOW_BEFORE)),
        end: if last_notice_us > 0 {
            last_notice_us.max(restarted_us) + micros(WINDOW_AFTER)
        } else {
            restarted_us + micros(NO_NOTICE_WINDOW)
        },
    };
    let deliveries = tally_deliveries(options, &records, &reports, window);
    let secs = |us: u64| us.saturating_sub(post_start_us) as f64 / 1e6;

    let mut checks = Vec::new();
    // Flat means no growth in steady traffic: from the first sample after
    // warm-up that is also past the outage (a reconnect allocates once; that
    // step is shown, not held against the run) to the last one.
    let warm_up = options.warm_up().as_secs_f64();
    let settled_at = warm_up.max(secs(window.end) + SETTLE.as_secs_f64());
    let at_or_after = |t: f64| samples.iter().find(|s| s.at >= t).copied().unwrap_or(last);
    let warm = at_or_after(warm_up);
    let settled = at_or_after(settled_at);
    for (i, name) in ["A", "B"].into_iter().enumerate() {
        let per = |sample: &Sample| {
            per_connection(
                sample.nodes[i].rss_bytes,
                idle.nodes[i].rss_bytes,
                per_node[i],
            )
        };
        let growth = per(&last) - per(&settled);
        checks.push(Check {
            name: format!("RSS per connection, node {name}"),
            figure: format!(
                "{} at {:.0} s (warm), {} at {:.0} s (outage over) → {} at {:.0} s ({}{} since \
                 the outage; {} connections)",
                kib(per(&warm)),
                warm.at,
                kib(per(&settled)),
                settled.at,
                kib(per(&last)),
                last.at,
                if growth >= 0.0 { "+" } else { "" },
                kib(growth),
                thousands(per_node[i] as f64)
            ),
            ok: Some(growth <= RSS_GROWTH_TOLERANCE),
            rule: format!(
                "flat: growth after warm-up and the outage ≤ {}",
                kib(RSS_GROWTH_TOLERANCE)
            ),
        });
    }
    checks.push(Check {
        name: "Deliveries outside the outage window".to_owned(),
        figure: format!(
            "{} of {} expected ({} messages); missing {}, duplicates {}, wrong room {}, \
             without id {}, unreadable {}",
            thousands(deliveries.received_outside as f64),
            thousands(deliveries.expected_outside as f64),
            thousands(deliveries.messages_outside as f64),
            thousands(deliveries.missing as f64),
            deliveries.duplicates,
            deliveries.foreign,
            deliveries.without_id,
            deliveries.malformed
        ),
        ok: Some(
            deliveries.missing == 0
                && deliveries.duplicates == 0
                && deliveries.foreign == 0
                && deliveries.malformed == 0
                && deliveries.without_id == 0,
        ),
        rule: "exact: each once to every member".to_owned(),
    });
    if !deliveries.refused_examples.is_empty() {
        let rooms = options.rooms as u64;
        let examples: Vec<String> = deliveries
            .refused_examples
            .iter()
            .map(|&(seq, sent_us, done_us, status)| {
                format!(
                    "message {seq} via node {} sent at {:.2} s, answered at {:.2} s: {}",
                    ["A", "B"][((seq / rooms) % 2) as usize],
                    secs(sent_us),
                    secs(done_us),
                    status.map_or_else(|| "no answer".to_owned(), |s| s.to_string())
                )
            })
            .collect();
        eprintln!(
            "posts refused outside the outage window, first ones: {}",
            examples.join("; ")
        );
    }
    if !deliveries.missing_examples.is_empty() {
        let nodes_n = 2;
        let examples: Vec<String> = deliveries
            .missing_examples
            .iter()
            .map(|&(seq, sent_us, received, members)| {
                let rooms = options.rooms as u64;
                format!(
                    "message {seq} (room soak-{}, via node {}) sent at {:.2} s: {received} of {members}",
                    seq % rooms,
                    ["A", "B"][((seq / rooms) % nodes_n) as usize],
                    secs(sent_us)
                )
            })
            .collect();
        eprintln!("missing deliveries, first ones: {}", examples.join("; "));
    }
    checks.push(Check {
        name: "Posts outside the outage window".to_owned(),
        figure: format!(
            "{} accepted, {} refused or failed",
            thousands(deliveries.posts_outside_ok as f64),
            deliveries.posts_outside_failed
        ),
        ok: Some(deliveries.posts_outside_failed == 0),
        rule: "all accepted (202)".to_owned(),
    });
    checks.push(Check {
        name: "Outage".to_owned(),
        figure: format!(
            "Redis killed at {:.1} s, back at {:.1} s; window {:.1}–{:.1} s: {} posts accepted, \
             {} refused or failed; {} of {} deliveries of accepted posts arrived",
            secs(killed_us),
            secs(restarted_us),
            secs(window.start),
            secs(window.end),
            thousands(deliveries.posts_inside_ok as f64),
            thousands(deliveries.posts_inside_failed as f64),
            thousands(deliveries.received_inside as f64),
            thousands(deliveries.expected_inside as f64),
        ),
        ok: None,
        rule: "report".to_owned(),
    });
    let notified = reports.iter().filter(|r| r.reconnected_notices > 0).count();
    checks.push(Check {
        name: "Gap signal (`notice`, kind `reconnected`)".to_owned(),
        figure: if first_notice_us > 0 {
            format!(
                "{} of {} clients got it ({:.1}–{:.1} s after the kill)",
                thousands(notified as f64),
                thousands(reports.len() as f64),
                (first_notice_us.saturating_sub(killed_us)) as f64 / 1e6,
                (last_notice_us.saturating_sub(killed_us)) as f64 / 1e6
            )
        } else {
            format!("0 of {} clients got it", thousands(reports.len() as f64))
        },
        ok: Some(notified == reports.len()),
        rule: "every client".to_owned(),
    });
    let ended: Vec<&ClientReport> = reports.iter().filter(|r| r.ended.is_some()).collect();
    checks.push(Check {
        name: "Streams and nodes".to_owned(),
        figure: format!(
            "{} of {} streams ended early{}; {} `gap` notices; nodes running: A {}, B {}",
            ended.len(),
            thousands(reports.len() as f64),
            ended
                .first()
                .and_then(|r| r.ended.as_deref())
                .map(|why| format!(" (first: {why})"))
                .unwrap_or_default(),
            reports.iter().map(|r| r.gap_notices).sum::<u64>(),
            if alive[0] { "yes" } else { "NO" },
            if alive[1] { "yes" } else { "NO" },
        ),
        ok: Some(ended.is_empty() && alive[0] && alive[1]),
        rule: "none ended; both alive".to_owned(),
    });
    let cpu = [0, 1].map(|i| last.nodes[i].cpu_secs - start_sample.nodes[i].cpu_secs);
    let delivered_in_run = delivered.max(1);
    checks.push(Check {
        name: "CPU per delivered message".to_owned(),
        figure: format!(
            "{:.2} µs (A {:.1} s + B {:.1} s of CPU for {} deliveries of {} posts in {:.0} s; \
             {:.0} µs per post; the clients and the poster used {:.1} s)",
            (cpu[0] + cpu[1]) / delivered_in_run as f64 * 1e6,
            cpu[0],
            cpu[1],
            thousands(delivered as f64),
            thousands(records.len() as f64),
            secs(drained_us),
            (cpu[0] + cpu[1]) / records.len().max(1) as f64 * 1e6,
            own_cpu,
        ),
        ok: None,
        rule: "report (both nodes)".to_owned(),
    });
    checks.push(Check {
        name: "End-to-end latency (POST sent → SSE frame read)".to_owned(),
        figure: format!(
            "p50 {} ms, p99 {} ms, max {} ms ({} deliveries)",
            load::ms(latency.value_at_quantile(0.5)),
            load::ms(latency.value_at_quantile(0.99)),
            load::ms(latency.max()),
            thousands(latency.len() as f64)
        ),
        ok: None,
        rule: "report".to_owned(),
    });

    Ok(Outcome {
        checks,
        samples,
        idle: idle.nodes,
        per_node,
        logs,
    })
}

pub(super) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

pub(super) fn sample(nodes: &[Node; 2]) -> Result<Sample, String> {
    let read = |node: &Node| {
        node.sample()
            .ok_or_else(|| format!("cannot read /proc of {} (pid {})", node.name, node.pid()))
    };
    Ok(Sample {
        at: 0.0,
        nodes: [read(&nodes[0])?, read(&nodes[1])?],
    })
}

/// Members of each room, as the clients were laid out.
pub(super) fn members_per_room(options: &Options) -> Vec<u64> {
    let mut members = vec![0u64; options.rooms];
    for index in 0..options.clients {
        members[index % options.rooms] += 1;
    }
    members
}
