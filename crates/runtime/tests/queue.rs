//! The runtime's guarantees with paused time, checked from a recorded
//! history of reconcile starts and ends (not from counters).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use drover_runtime::{Action, Context, Controller, Reconciler, Trigger};
use drover_store::backoff::BackoffPolicy;
use drover_store::embedded::EmbeddedStore;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Start(String),
    End(String),
}

#[derive(Debug, thiserror::Error)]
#[error("injected failure of {0}")]
struct Injected(String);

/// What one reconcile of a key does: take this long, then answer.
#[derive(Clone, Debug)]
struct Step {
    takes: Duration,
    answer: Result<Action, ()>,
}

fn ok(takes_ms: u64) -> Step {
    Step {
        takes: Duration::from_millis(takes_ms),
        answer: Ok(Action::Done),
    }
}

fn fail() -> Step {
    Step {
        takes: Duration::ZERO,
        answer: Err(()),
    }
}

/// Reconciles by script (per key; the default when a key's script is used
/// up) and records every start and end.
#[derive(Clone, Default)]
struct Scripted {
    history: Arc<Mutex<Vec<(Instant, Ev)>>>,
    scripts: Arc<Mutex<HashMap<String, VecDeque<Step>>>>,
    default_takes: Duration,
}

impl Scripted {
    fn taking(ms: u64) -> Self {
        Scripted {
            default_takes: Duration::from_millis(ms),
            ..Scripted::default()
        }
    }

    fn script(&self, key: &str, steps: impl IntoIterator<Item = Step>) {
        self.scripts
            .lock()
            .insert(key.to_owned(), steps.into_iter().collect());
    }

    fn history(&self) -> Vec<(Instant, Ev)> {
        self.history.lock().clone()
    }

    fn starts(&self) -> Vec<String> {
        self.history()
            .into_iter()
            .filter_map(|(_, ev)| match ev {
                Ev::Start(k) => Some(k),
                Ev::End(_) => None,
            })
            .collect()
    }

    fn start_times(&self, key: &str) -> Vec<Instant> {
        self.history()
            .into_iter()
            .filter(|(_, ev)| *ev == Ev::Start(key.to_owned()))
            .map(|(at, _)| at)
            .collect()
    }
}

impl Reconciler<EmbeddedStore> for Scripted {
    type Key = String;
    type Error = Injected;

    async fn reconcile(
        &self,
        key: &String,
        _ctx: &Context<EmbeddedStore>,
    ) -> Result<Action, Injected> {
        self.history
            .lock()
            .push((Instant::now(), Ev::Start(key.clone())));
        let step = self
            .scripts
            .lock()
            .get_mut(key)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Step {
                takes: self.default_takes,
                answer: Ok(Action::Done),
            });
        sleep(step.takes).await;
        self.history
            .lock()
            .push((Instant::now(), Ev::End(key.clone())));
        step.answer.map_err(|()| Injected(key.clone()))
    }
}

struct Running {
    trigger: Trigger<String>,
    shutdown: CancellationToken,
    task: JoinHandle<drover_runtime::Result<()>>,
}

impl Running {
    async fn send(&self, key: &str) {
        assert!(self.trigger.send(key.to_owned()).await);
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(600), self.task)
            .await
            .expect("the controller stops")
            .unwrap()
            .unwrap();
    }
}

fn start(controller: Controller<EmbeddedStore, Scripted>) -> Running {
    let shutdown = CancellationToken::new();
    let trigger = controller.trigger();
    let task = tokio::spawn(controller.run(shutdown.clone()));
    Running {
        trigger,
        shutdown,
        task,
    }
}

fn controller(reconciler: Scripted) -> Controller<EmbeddedStore, Scripted> {
    Controller::new("test", EmbeddedStore::in_memory(), reconciler).backoff(BackoffPolicy::new(
        Duration::from_millis(100),
        Duration::from_secs(10),
    ))
}

/// For every key, starts and ends alternate (never two reconciles of one
/// key at once); returns the largest number of reconciles running at once.
fn check_history(history: &[(Instant, Ev)]) -> usize {
    let mut running: HashMap<&str, bool> = HashMap::new();
    let (mut now, mut max) = (0usize, 0usize);
    for (_, ev) in history {
        match ev {
            Ev::Start(k) => {
                let was = running.insert(k, true).unwrap_or(false);
                assert!(!was, "{k} started while it was running: {history:?}");
                now += 1;
                max = max.max(now);
            }
            Ev::End(k) => {
                assert_eq!(
                    running.insert(k, false),
                    Some(true),
                    "{k} ended without a start"
                );
                now -= 1;
            }
        }
    }
    max
}

#[tokio::test(start_paused = true)]
async fn duplicate_triggers_make_one_reconcile() {
    let reconciler = Scripted::taking(10);
    let (open, gate) = oneshot::channel::<()>();
    let running = start(controller(reconciler.clone()).ready_when(async move {
        let _ = gate.await;
    }));
    for _ in 0..5 {
        running.send("a").await;
    }
    running.send("b").await;
    running.send("b").await;
    running.send("a").await;
    // Let the controller take every trigger into its queue before it may
    // run anything.
    sleep(Duration::from_millis(100)).await;
    open.send(()).unwrap();
    sleep(Duration::from_secs(5)).await;
    let mut starts = reconciler.starts();
    starts.sort();
    assert_eq!(starts, ["a", "b"]);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn one_key_never_runs_twice_at_once_and_a_trigger_during_a_run_reruns_it_once() {
    let reconciler = Scripted::taking(100);
    let running = start(controller(reconciler.clone()).concurrency(4));
    // Triggers every 30 ms for 2 s, on two keys, while each run takes 100 ms.
    for n in 0..66u32 {
        running.send("a").await;
        if n % 2 == 0 {
            running.send("b").await;
        }
        sleep(Duration::from_millis(30)).await;
    }
    sleep(Duration::from_secs(2)).await;
    let history = reconciler.history();
    check_history(&history);
    let runs_a = reconciler.start_times("a").len();
    // Each 100 ms run absorbs the ~3 triggers that came during it: about
    // 2000 / 100 runs, never one per trigger.
    assert!((10..40).contains(&runs_a), "{runs_a} runs of a");
    // One more trigger after everything settled: exactly one more run.
    running.send("a").await;
    sleep(Duration::from_secs(1)).await;
    assert_eq!(reconciler.start_times("a").len(), runs_a + 1);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_bounded() {
    let reconciler = Scripted::taking(1000);
    let running = start(controller(reconciler.clone()).concurrency(3));
    for n in 0..10 {
        running.send(&format!("k{n}")).await;
    }
    sleep(Duration::from_secs(10)).await;
    let history = reconciler.history();
    assert_eq!(check_history(&history), 3, "at most 3, and 3 were used");
    assert_eq!(reconciler.starts().len(), 10);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_per_key_and_a_success_resets_it() {
    let reconciler = Scripted::taking(0);
    reconciler.script("a", [fail(), fail(), fail(), fail(), ok(0), fail(), ok(0)]);
    let controller = controller(reconciler.clone());
    let metrics = controller.metrics_handle();
    let running = start(controller);
    running.send("a").await;
    running.send("b").await;
    sleep(Duration::from_secs(3)).await;
    // While a failed, a trigger does not run it before its backoff: send
    // one during the 800 ms wait.
    let a = reconciler.start_times("a");
    assert_eq!(a.len(), 5, "four failures, then the success");
    let gaps: Vec<Duration> = a.windows(2).map(|w| w[1] - w[0]).collect();
    let ms = Duration::from_millis;
    assert_eq!(gaps, [ms(100), ms(200), ms(400), ms(800)]);
    // The success reset the backoff: the next failure waits 100 ms again.
    running.send("a").await;
    sleep(Duration::from_secs(1)).await;
    let a = reconciler.start_times("a");
    assert_eq!(a.len(), 7);
    assert_eq!(a[6] - a[5], ms(100));
    // b never failed and ran once.
    assert_eq!(reconciler.start_times("b").len(), 1);
    assert_eq!(metrics.reconciles("test", false), 5);
    assert_eq!(metrics.reconciles("test", true), 3);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_trigger_does_not_cut_a_backoff_short() {
    let reconciler = Scripted::taking(0);
    reconciler.script("a", [fail(), fail(), fail()]);
    let running = start(controller(reconciler.clone()));
    running.send("a").await;
    sleep(Duration::from_millis(350)).await; // failed at 0, 100, 300; next at 700
    assert_eq!(reconciler.start_times("a").len(), 3);
    running.send("a").await;
    running.send("a").await;
    sleep(Duration::from_millis(300)).await;
    assert_eq!(
        reconciler.start_times("a").len(),
        3,
        "held until the backoff ends"
    );
    sleep(Duration::from_millis(100)).await;
    assert_eq!(reconciler.start_times("a").len(), 4, "then run once");
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn nothing_runs_before_the_gates_open() {
    let reconciler = Scripted::taking(0);
    let (open, gate) = oneshot::channel::<()>();
    let running = start(controller(reconciler.clone()).ready_when(async move {
        let _ = gate.await;
    }));
    running.send("a").await;
    sleep(Duration::from_secs(60)).await;
    assert!(reconciler.history().is_empty(), "gated");
    open.send(()).unwrap();
    sleep(Duration::from_millis(10)).await;
    assert_eq!(reconciler.starts(), ["a"]);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_in_flight_work_and_starts_nothing_new() {
    let reconciler = Scripted::taking(5000);
    let running = start(controller(reconciler.clone()).concurrency(2));
    running.send("a").await;
    running.send("b").await;
    running.send("c").await; // waits for a slot
    sleep(Duration::from_secs(1)).await;
    let stopped_at = Instant::now();
    let Running { shutdown, task, .. } = running;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
    let history = reconciler.history();
    check_history(&history);
    let ends: Vec<_> = history
        .iter()
        .filter(|(_, ev)| matches!(ev, Ev::End(_)))
        .collect();
    assert_eq!(ends.len(), 2, "a and b ran to the end before run returned");
    assert!(ends.iter().all(|(at, _)| *at > stopped_at));
    let mut starts = reconciler.starts();
    starts.sort();
    assert_eq!(starts, ["a", "b"], "c was not started after the shutdown");
}

#[tokio::test(start_paused = true)]
async fn a_drain_timeout_aborts_reconciles_that_do_not_stop() {
    let reconciler = Scripted::taking(3_600_000);
    let running = start(controller(reconciler.clone()).drain_timeout(Duration::from_secs(2)));
    running.send("stuck").await;
    sleep(Duration::from_millis(10)).await;
    running.stop().await;
    assert_eq!(reconciler.starts(), ["stuck"]);
}

#[tokio::test(start_paused = true)]
async fn requeue_after_runs_again_after_the_delay_only() {
    let reconciler = Scripted::taking(0);
    reconciler.script(
        "a",
        [Step {
            takes: Duration::ZERO,
            answer: Ok(Action::RequeueAfter(Duration::from_secs(3))),
        }],
    );
    let running = start(controller(reconciler.clone()));
    running.send("a").await;
    sleep(Duration::from_millis(2900)).await;
    assert_eq!(reconciler.start_times("a").len(), 1);
    sleep(Duration::from_secs(10)).await;
    let a = reconciler.start_times("a");
    assert_eq!(a.len(), 2, "requeued once; Done ends it");
    assert_eq!(a[1] - a[0], Duration::from_secs(3));
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn resync_queues_every_key_periodically() {
    let reconciler = Scripted::taking(0);
    let running = start(
        controller(reconciler.clone()).resync(Duration::from_secs(30), || {
            vec!["x".to_owned(), "y".to_owned()]
        }),
    );
    sleep(Duration::from_secs(95)).await;
    assert_eq!(reconciler.start_times("x").len(), 3);
    assert_eq!(reconciler.start_times("y").len(), 3);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bad_settings_are_refused() {
    let err = controller(Scripted::default())
        .concurrency(0)
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("concurrency"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_controller_without_trigger_sources_still_resyncs_and_stops() {
    let reconciler = Scripted::taking(0);
    let shutdown = CancellationToken::new();
    // No Trigger handle is kept and nothing is watched: the trigger
    // channel is closed from the start.
    let task = tokio::spawn(
        controller(reconciler.clone())
            .resync(Duration::from_secs(10), || vec!["only".to_owned()])
            .run(shutdown.clone()),
    );
    sleep(Duration::from_secs(25)).await;
    assert_eq!(reconciler.start_times("only").len(), 2);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
}
