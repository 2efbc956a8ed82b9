//! Shards: one suite spread over several machines or scheduler tasks. Shard `I/N` runs every
//! experiment (workload × seed × variant, on all its backends) whose index in the suite's
//! order leaves remainder `I` when divided by `N`, so the shards of a run are a partition for
//! any `N`, and the backends of one experiment always take turns on one machine.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// From 0 to `count - 1`, as Slurm's `SLURM_ARRAY_TASK_ID` and Kubernetes'
    /// `JOB_COMPLETION_INDEX` number them.
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Whether the experiment at this index of the suite's order is this shard's.
    pub fn holds(&self, experiment: usize) -> bool {
        experiment % self.count == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("--shard {0}: write I/N, the shard's index and the number of shards, e.g. 0/4")]
    Form(String),
    #[error("--shard {0}: the number of shards must be 1 or more, e.g. 0/1")]
    NoShards(String),
    #[error("--shard {given}: shards are numbered from 0 to {last}; give an index below {count}")]
    Beyond { given: String, last: usize, count: usize },
}

impl FromStr for Shard {
    type Err = ShardError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let form = || ShardError::Form(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(form)?;
        let index: usize = i.trim().parse().map_err(|_| form())?;
        let count: usize = n.trim().parse().map_err(|_| form())?;
        if count == 0 {
            return Err(ShardError::NoShards(s.to_string()));
        }
        if index >= count {
            return Err(ShardError::Beyond { given: s.to_string(), last: count - 1, count });
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_with_the_fix() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        assert_eq!("0/1".parse::<Shard>().unwrap().to_string(), "0/1");
        let e = "3/3".parse::<Shard>().unwrap_err().to_string();
        assert!(e.contains("from 0 to 2") && e.contains("below 3"), "{e}");
        let e = "0/0".parse::<Shard>().unwrap_err().to_string();
        assert!(e.contains("1 or more"), "{e}");
        for bad in ["1", "a/2", "1/b", "-1/2", ""] {
            assert!(matches!(bad.parse::<Shard>(), Err(ShardError::Form(_))), "{bad}");
        }
    }

    #[test]
    fn shards_partition_the_experiments_for_any_count() {
        for count in 1..=12 {
            for experiments in 0..=10 {
                let mut owners = vec![0; experiments];
                for index in 0..count {
                    let shard = Shard { index, count };
                    (0..experiments).filter(|&e| shard.holds(e)).for_each(|e| owners[e] += 1);
                }
                assert!(owners.iter().all(|&n| n == 1), "{count} shards, {experiments}");
            }
        }
    }
}
