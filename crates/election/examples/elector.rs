//! Two candidates in one election: the leader does fenced work until it
//! shuts down, and the other takes over at once.
//!
//! ```text
//! cargo run -p drover-election --example elector
//! DROVER_ETCD_ENDPOINTS=http://127.0.0.1:2379 cargo run -p drover-election --example elector
//! ```

use std::time::Duration;

use drover_election::{Election, Elector, ElectorConfig, Term};
use drover_store::embedded::EmbeddedStore;
use drover_store::{Put, Store};
use drover_store_etcd::EtcdStore;
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::var("DROVER_ETCD_ENDPOINTS") {
        Ok(endpoints) => {
            let endpoints: Vec<&str> = endpoints.split(',').collect();
            println!("backend: etcd at {endpoints:?}");
            demo(EtcdStore::connect(endpoints, Default::default()).await?).await
        }
        Err(_) => {
            println!("backend: embedded (in memory)");
            demo(EmbeddedStore::in_memory()).await
        }
    }
}

async fn demo<S: Store>(store: S) -> Result<(), Box<dyn std::error::Error>> {
    let prefix = "/drover-example/election/reports/";
    let config = ElectorConfig::default().with_timing(
        Duration::from_secs(3),
        Duration::from_secs(2),
        Duration::from_millis(500),
    );
    let mut runs = Vec::new();
    for name in ["alpha", "beta"] {
        let elector = Elector::builder(Election::with_prefix(store.clone(), prefix)?)
            .config(config.clone().with_identity(name))
            .on_started_leading(move |term: Term<S>| async move {
                println!("{name}: leading, fencing token {}", term.token());
                let mut n = 0u64;
                loop {
                    n += 1;
                    let put = Put::new("/drover-example/reports/last", format!("{name} #{n}"));
                    if let Err(e) = term.commit_fenced([put.into()]).await {
                        println!("{name}: write refused ({e}); leadership is gone");
                        return;
                    }
                    tokio::select! {
                        _ = term.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                    }
                }
            })
            .on_stopped_leading(move |summary| {
                println!(
                    "{name}: stopped leading after {:?} ({})",
                    summary.duration, summary.reason
                );
            })
            .on_new_leader(move |leader| match leader {
                Some(l) => println!("{name}: observed leader {}", l.value_str()),
                None => println!("{name}: observed no leader"),
            })
            .build()?;
        let shutdown = CancellationToken::new();
        let run = tokio::spawn({
            let (elector, shutdown) = (elector.clone(), shutdown.clone());
            async move { elector.run(shutdown).await }
        });
        runs.push((elector, shutdown, run));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = runs
        .iter()
        .position(|(e, _, _)| e.is_leader())
        .ok_or("no leader")?;
    let (elector, shutdown, run) = runs.remove(leader);
    println!("shutting down the leader {}", elector.identity());
    shutdown.cancel();
    run.await??;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (elector, shutdown, run) in runs {
        println!("{} leads: {}", elector.identity(), elector.is_leader());
        shutdown.cancel();
        run.await??;
    }
    Ok(())
}
