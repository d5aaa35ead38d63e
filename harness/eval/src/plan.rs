//! Which tokens each forward pass encodes. The requests' inputs form a [`PrefixTrie`]; a plan
//! turns it into *stages*: a stage encodes the tokens `[start, end)` of one path, continuing the
//! keys and values of its parent stage (the prefix KV cache) or from scratch. A prefix shared by
//! several requests becomes a stage of its own, encoded once, when that saves enough tokens;
//! otherwise it is folded into the stages below it.
//!
//! Every request is read off exactly the positions lm-eval would score: a scored position may lie
//! in an ancestor stage (a continuation that starts inside a shared prefix) or in a longer
//! request's stage (an input that is a prefix of another's: causal attention makes the logits
//! identical). With [`Reuse::Nothing`] neither shortcut is taken.
use crate::trie::PrefixTrie;

/// A prefix is encoded once for the requests continuing it only if that saves at least this many
/// token positions: below that, the extra (smaller) forward passes cost more than the positions
/// they save (a forward pass has a fixed cost of reading every weight, about that of a few dozen
/// positions on a CPU).
pub const MIN_SAVED_TOKENS: usize = 32;

/// How much work requests may share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Shared prefixes are encoded once and continued (prefix KV cache), and an input that is
    /// a prefix of another's is read off the longer pass.
    SharedPrefixes,
    /// Only the read-off; every pass starts from scratch (`--no-prefix-cache`).
    LongerPasses,
    /// Every distinct input gets its own pass: routing that is not causal (a token's experts
    /// depend on later tokens) makes a prefix's logits depend on what follows it.
    Nothing,
}

/// One job's tokens: a scored input (logits at its last `targets.len()` positions predict
/// `targets`) or a prompt to continue.
#[derive(Debug, Clone, Copy)]
pub struct PlanJob<'a> {
    pub tokens: &'a [i64],
    pub targets: &'a [i64],
    pub generates: bool,
}

/// A position whose log-probability of `target` job `job` sums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoredPosition {
    pub position: usize,
    pub target: i64,
    pub job: usize,
}

/// One forward-pass row: the tokens `jobs[seq].tokens[start..end]` after the keys and values of
/// `parent` (which ends at `start`), or from scratch (`start` = 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub seq: usize,
    pub start: usize,
    pub end: usize,
    pub parent: Option<usize>,
    /// Stages that continue this one's keys and values.
    pub children: Vec<usize>,
    /// Scored positions inside `[start, end)`.
    pub scored: Vec<ScoredPosition>,
    /// Generation jobs whose prompt ends here (they continue this stage's keys and values).
    pub generations: Vec<usize>,
}

impl Stage {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Whether later work continues this stage (its keys and values must be kept).
    pub fn is_continued(&self) -> bool {
        !self.children.is_empty() || !self.generations.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub stages: Vec<Stage>,
    /// Stages without a parent.
    pub roots: Vec<usize>,
}

impl Plan {
    pub fn new(jobs: &[PlanJob<'_>], reuse: Reuse) -> Plan {
        let tokens: Vec<&[i64]> = jobs.iter().map(|j| j.tokens).collect();
        let trie = PrefixTrie::build(&tokens);
        let nodes = trie.nodes();
        let mut plan = Plan {
            stages: Vec::new(),
            roots: Vec::new(),
        };
        // Top-down: the stage each node continues (its nearest cached ancestor) and where it ends.
        let mut base: Vec<(Option<usize>, usize)> = vec![(None, 0); nodes.len()];
        let mut stage_of: Vec<Option<usize>> = vec![None; nodes.len()];
        let order = trie.preorder();
        for &n in &order[1..] {
            let node = &nodes[n];
            let (parent, start) = base[n];
            let generations: Vec<usize> = node
                .ends
                .iter()
                .copied()
                .filter(|&j| jobs[j].generates)
                .collect();
            let scored_here = node.ends.iter().any(|&j| !jobs[j].generates);
            // Continuations of this prefix: its children, and its generations as one more.
            let users = node.children.len() + usize::from(!generations.is_empty());
            let cached = reuse == Reuse::SharedPrefixes
                && !node.children.is_empty()
                && (users - 1) * (node.end - start) >= MIN_SAVED_TOKENS;
            let staged = node.children.is_empty()
                || !generations.is_empty()
                || cached
                || (reuse == Reuse::Nothing && scored_here);
            if staged {
                let s = plan.stages.len();
                plan.stages.push(Stage {
                    seq: node.seq,
                    start,
                    end: node.end,
                    parent,
                    children: Vec::new(),
                    scored: Vec::new(),
                    generations,
                });
                match parent {
                    Some(p) => plan.stages[p].children.push(s),
                    None => plan.roots.push(s),
                }
                stage_of[n] = Some(s);
            }
            let below = match (cached, stage_of[n]) {
                (true, Some(s)) => (Some(s), node.end),
                _ => (parent, start),
            };
            for &c in &node.children {
                base[c] = below;
            }
        }
        // Bottom-up: the stage whose pass covers each node's path (itself, or its first child's).
        let mut carrier = vec![usize::MAX; nodes.len()];
        for &n in order[1..].iter().rev() {
            carrier[n] = stage_of[n].unwrap_or_else(|| carrier[nodes[n].children[0]]);
        }
        for &n in &order[1..] {
            for &j in &nodes[n].ends {
                if !jobs[j].generates {
                    plan.assign_scored(j, &jobs[j], carrier[n]);
                }
            }
        }
        plan
    }

    /// Puts each scored position of `job` into the stage on its path that encodes it.
    fn assign_scored(&mut self, j: usize, job: &PlanJob<'_>, mut stage: usize) {
        let first = job.tokens.len() - job.targets.len();
        for (i, &target) in job.targets.iter().enumerate().rev() {
            let position = first + i;
            while position < self.stages[stage].start {
                stage = self.stages[stage]
                    .parent
                    .expect("a path's stages cover it from position 0");
            }
            self.stages[stage].scored.push(ScoredPosition {
                position,
                target,
                job: j,
            });
        }
    }

    /// Token positions the plan encodes (what the forward passes cost, padding aside).
    pub fn encoded_tokens(&self) -> usize {
        self.stages.iter().map(Stage::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored<'a>(tokens: &'a [i64], targets: &'a [i64]) -> PlanJob<'a> {
        PlanJob {
            tokens,
            targets,
            generates: false,
        }
    }

    /// Every scored position of every job appears once, in a stage that encodes it, and every
    /// stage's path is a prefix of its jobs' inputs (checked through positions and parents).
    fn check_cover(plan: &Plan, jobs: &[PlanJob<'_>]) {
        let mut seen: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
        for (s, stage) in plan.stages.iter().enumerate() {
            assert!(stage.start < stage.end, "stage {s} is empty");
            match stage.parent {
                Some(p) => assert_eq!(plan.stages[p].end, stage.start),
                None => assert_eq!(stage.start, 0),
            }
            for sp in &stage.scored {
                assert!(stage.start <= sp.position && sp.position < stage.end);
                // The stage's path and the job's input agree up to the scored position.
                let path = &jobs[stage.seq].tokens[..=sp.position];
                assert_eq!(path, &jobs[sp.job].tokens[..=sp.position]);
                seen[sp.job].push(sp.position);
            }
        }
        for (j, job) in jobs.iter().enumerate() {
            let mut got = seen[j].clone();
            got.sort();
            let want: Vec<usize> =
                (job.tokens.len() - job.targets.len()..job.tokens.len()).collect();
            assert_eq!(got, want, "job {j}");
        }
    }

    #[test]
    fn a_long_shared_prefix_is_encoded_once() {
        let shots: Vec<i64> = (100..200).collect(); // a 100-token few-shot preamble
        let inputs: Vec<Vec<i64>> = (0..4)
            .map(|d| [shots.clone(), vec![d, d + 10, d + 20]].concat())
            .collect();
        let target = [7i64];
        let jobs: Vec<PlanJob> = inputs.iter().map(|t| scored(t, &target)).collect();
        let plan = Plan::new(&jobs, Reuse::SharedPrefixes);
        check_cover(&plan, &jobs);
        assert_eq!(plan.roots.len(), 1);
        let root = &plan.stages[plan.roots[0]];
        assert_eq!((root.start, root.end, root.children.len()), (0, 100, 4));
        assert_eq!(plan.encoded_tokens(), 100 + 4 * 3);
        // Without the cache: four full passes; non-causal: the same here (no prefix inputs).
        for reuse in [Reuse::LongerPasses, Reuse::Nothing] {
            let plan = Plan::new(&jobs, reuse);
            check_cover(&plan, &jobs);
            assert_eq!(plan.roots.len(), 4);
            assert_eq!(plan.encoded_tokens(), 4 * 103);
        }
    }

    #[test]
    fn a_short_shared_prefix_is_folded_into_its_continuations() {
        let inputs = [vec![1i64, 2, 3, 4], vec![1, 2, 3, 5]];
        let jobs: Vec<PlanJob> = inputs.iter().map(|t| scored(t, &[9])).collect();
        let plan = Plan::new(&jobs, Reuse::SharedPrefixes);
        check_cover(&plan, &jobs);
        assert_eq!(plan.roots.len(), 2);
        assert_eq!(plan.encoded_tokens(), 8);
    }

    /// A continuation that starts inside the shared prefix is scored partly in the prefix's
    /// stage; an input that is a prefix of another is read off the longer pass unless nothing
    /// may be shared.
    #[test]
    fn scored_positions_follow_the_stage_that_encodes_them() {
        let shared: Vec<i64> = (0..40).collect();
        let a = [shared.clone(), vec![50, 51]].concat();
        let b = [shared.clone(), vec![60, 61]].concat();
        let prefix = shared[..20].to_vec();
        let jobs = vec![
            scored(&a, &[38, 39, 50, 51, 52]), // scores 3 positions of the shared part
            scored(&b, &[60, 61, 62]),
            scored(&prefix, &[19, 20]),
        ];
        let plan = Plan::new(&jobs, Reuse::SharedPrefixes);
        check_cover(&plan, &jobs);
        let root = &plan.stages[plan.roots[0]];
        assert_eq!((root.start, root.end), (0, 40));
        let in_root: Vec<usize> = root.scored.iter().map(|s| s.job).collect();
        assert_eq!(in_root.iter().filter(|&&j| j == 0).count(), 3);
        assert_eq!(in_root.iter().filter(|&&j| j == 2).count(), 2);
        assert_eq!(plan.encoded_tokens(), 44);

        let plan = Plan::new(&jobs, Reuse::LongerPasses);
        check_cover(&plan, &jobs);
        assert_eq!(
            plan.roots.len(),
            2,
            "the prefix input rides on a longer pass"
        );
        let plan = Plan::new(&jobs, Reuse::Nothing);
        check_cover(&plan, &jobs);
        assert_eq!(plan.roots.len(), 3, "non-causal: its own pass");
        assert!(plan.stages.iter().all(|s| s.parent.is_none()));
    }

    #[test]
    fn generations_keep_their_prompt_stage_and_share_its_prefix() {
        let shots: Vec<i64> = (0..64).collect();
        let p1 = [shots.clone(), vec![100, 101]].concat();
        let p2 = [shots.clone(), vec![200]].concat();
        let gen = |tokens| PlanJob {
            tokens,
            targets: &[],
            generates: true,
        };
        let jobs = vec![gen(&p1), gen(&p2), gen(&p2)];
        let plan = Plan::new(&jobs, Reuse::SharedPrefixes);
        check_cover(&plan, &jobs);
        assert_eq!(plan.encoded_tokens(), 64 + 2 + 1);
        let mut gens: Vec<Vec<usize>> = plan
            .stages
            .iter()
            .filter(|s| !s.generations.is_empty())
            .map(|s| s.generations.clone())
            .collect();
        gens.sort();
        assert_eq!(gens, vec![vec![0], vec![1, 2]]);
        // A prompt that is a prefix of another still gets its own stage (its keys and values
        // are continued by its decoding), and is continued by the longer prompt.
        let long = [p1.clone(), (300..340).collect()].concat();
        let jobs = vec![gen(&p1), gen(&long)];
        let plan = Plan::new(&jobs, Reuse::SharedPrefixes);
        check_cover(&plan, &jobs);
        assert_eq!(plan.encoded_tokens(), long.len());
        let plan = Plan::new(&jobs, Reuse::LongerPasses);
        assert_eq!(plan.encoded_tokens(), p1.len() + long.len());
    }
}
