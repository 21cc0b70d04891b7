//! Resource usage over a run: CPU% and resident memory of planrun's own process (and of a
//! target process, when its pid is known), sampled once a second on a plain thread so the async
//! runtime is never blocked.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::contract::{ResourceSample, ResourceSeries};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// A running sampler; [`Sampler::stop`] ends it and returns the samples.
pub struct Sampler {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<ResourceSeries>,
}

const MIB: f64 = 1024.0 * 1024.0;

impl Sampler {
    /// Start sampling every `interval` on a background thread.
    pub fn start(target_pid: Option<u32>, agent_in_process: bool, interval: Duration) -> Self {
        let (stop, rx) = mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            let mut series = ResourceSeries {
                interval_s: interval.as_secs_f64(),
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
                target_pid,
                agent_in_process,
                samples: Vec::new(),
            };
            let Ok(me) = sysinfo::get_current_pid() else {
                return series;
            };
            let target = target_pid.map(Pid::from_u32);
            let pids: Vec<Pid> = std::iter::once(me).chain(target).collect();
            let mut sys = System::new();
            let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
            let start = Instant::now();
            sys.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                sys.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
                let Some(p) = sys.process(me) else { break };
                let t = target.and_then(|pid| sys.process(pid));
                series.samples.push(ResourceSample {
                    t_s: (start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
                    cpu_pct: f64::from(p.cpu_usage()),
                    rss_mb: p.memory() as f64 / MIB,
                    target_cpu_pct: t.map(|t| f64::from(t.cpu_usage())),
                    target_rss_mb: t.map(|t| t.memory() as f64 / MIB),
                });
            }
            series
        });
        Sampler { stop, handle }
    }

    /// Stop sampling and return what was sampled.
    pub fn stop(self) -> ResourceSeries {
        let _ = self.stop.send(());
        self.handle.join().unwrap_or_default()
    }
}

/// The open-file limit could not be read or raised.
#[derive(Debug, thiserror::Error)]
pub enum FdLimitError {
    #[error("cannot read the open-file limit: {0}")]
    Read(std::io::Error),
    #[error("cannot raise the open-file limit from {from} to {to}: {source}")]
    Raise {
        from: u64,
        to: u64,
        source: std::io::Error,
    },
}

/// Raise the soft limit on open files (RLIMIT_NOFILE) to the hard limit, so many users don't
/// run out of sockets. Returns `Some((old, new))` when it was raised, `None` when already at
/// the hard limit (or not on Unix).
pub fn raise_fd_limit() -> Result<Option<(u64, u64)>, FdLimitError> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass; no other memory is touched.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return Err(FdLimitError::Read(std::io::Error::last_os_error()));
        }
        let old = lim.rlim_cur;
        // macOS refuses values above OPEN_MAX even when the hard limit is unlimited.
        let mut target = lim.rlim_max;
        if cfg!(target_os = "macos") {
            target = target.min(10_240);
        }
        if old >= target {
            return Ok(None);
        }
        lim.rlim_cur = target;
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
            return Err(FdLimitError::Raise {
                from: old as u64,
                to: target as u64,
                source: std::io::Error::last_os_error(),
            });
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
        Ok(Some((old as u64, target as u64)))
    }
    #[cfg(not(unix))]
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_own_process() {
        let s = Sampler::start(None, false, Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(180));
        let series = s.stop();
        assert!(!series.samples.is_empty());
        assert!(series.samples.iter().all(|x| x.rss_mb > 1.0));
        assert!(series.max_cpu_pct().is_some());
    }
}
