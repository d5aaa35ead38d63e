//! Code benchmarks (HumanEval, MBPP): the ports of their lm-eval hooks, the pass@k metrics,
//! and the execution of generated programs in moebench's sandbox.
//!
//! - `lm_eval/tasks/humaneval/utils.py`: `build_predictions` (the `create_test` filter: the
//!   prompt followed by each generation) and `pass_at_k` (pass@k for every `k` listed);
//! - `lm_eval/tasks/mbpp/utils.py`: `list_fewshot_samples` (the three prompt examples) and
//!   `pass_at_1`;
//! - both metrics call Hugging Face `evaluate`'s `code_eval`, which runs
//!   `candidate + "\n" + reference` for every candidate and reports the unbiased pass@k
//!   estimator of Chen et al. 2021 (§2.1, eq. 1), averaged over problems.
//!
//! Programs run only in [`moebench_sandbox`] (namespaces, rlimits, wall clock), and only once
//! the user confirmed that the task may execute generated code.
use moebench_sandbox::python::{PythonChecker, Verdict};
use moebench_sandbox::{Isolation, Limits, Policy, Sandbox, SandboxError};
use serde_json::{json, Map, Value};
use std::ffi::OsString;
use std::time::Duration;

/// `lm_eval/tasks/humaneval/utils.py` `build_predictions` for one document: the prompt
/// followed by each generation.
pub(crate) fn humaneval_build_predictions(
    doc: &Value,
    responses: Vec<String>,
) -> Result<Vec<String>, String> {
    let prompt = doc
        .get("prompt")
        .and_then(Value::as_str)
        .ok_or("the document has no string field `prompt`")?;
    Ok(responses
        .into_iter()
        .map(|response| format!("{prompt}{response}"))
        .collect())
}

/// `lm_eval/tasks/mbpp/utils.py` `list_fewshot_samples`: MBPP's prompt examples (task ids
/// 2, 3 and 4, the three-shot prompt of Austin et al. 2021), marked `is_fewshot` for the
/// task's `doc_to_target` template.
pub(crate) fn mbpp_fewshot_samples() -> Vec<Value> {
    vec![
        json!({
            "task_id": 2,
            "text": "Write a function to find the similar elements from the given two tuple lists.",
            "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n  return (res) ",
            "test_list": [
                "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
                "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
                "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)",
            ],
            "is_fewshot": true,
        }),
        json!({
            "task_id": 3,
            "text": "Write a python function to identify non-prime numbers.",
            "code": "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):\r\n        if n % i == 0:\r\n            result = True\r\n    return result",
            "test_list": [
                "assert is_not_prime(2) == False",
                "assert is_not_prime(10) == True",
                "assert is_not_prime(35) == True",
            ],
            "is_fewshot": true,
        }),
        json!({
            "task_id": 4,
            "text": "Write a function to find the largest integers from a given list of numbers using heap queue algorithm.",
            "code": "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n  return largest_nums",
            "test_list": [
                "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
                "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
                "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]",
            ],
            "is_fewshot": true,
        }),
    ]
}

/// The unbiased estimator of pass@k from `n` samples of which `c` pass (Chen et al. 2021,
/// eq. 1: `1 - C(n-c, k) / C(n, k)`), in the numerically stable product form of their
/// Figure 3: `1 - prod_{i=n-c+1}^{n} (1 - k / i)`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    assert!(c <= n && k <= n, "pass@{k} with {c} of {n} correct");
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product::<f64>()
}

/// A metric that executes the candidates: `pass_at_k` (humaneval's `utils.pass_at_k`,
/// reported as `pass@<k>` for each `k`) or `pass_at_1` (mbpp's `utils.pass_at_1`, reported
/// under its own name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeMetric {
    name: &'static str,
    ks: Vec<usize>,
}

impl CodeMetric {
    /// The metric a `metric_list` entry (`metric: name` with keyword arguments `kwargs`)
    /// names, or `None` when it is not a code metric.
    pub(crate) fn from_config(
        name: &str,
        kwargs: &Map<String, Value>,
    ) -> Option<Result<Self, String>> {
        let unknown = |allowed: &[&str]| {
            kwargs
                .keys()
                .find(|key| !allowed.contains(&key.as_str()))
                .map(|key| Err(format!("metric `{name}` takes no argument `{key}`")))
        };
        match name {
            "pass_at_1" => Some(unknown(&[]).unwrap_or(Ok(Self {
                name: "pass_at_1",
                ks: vec![1],
            }))),
            "pass_at_k" => Some(unknown(&["k"]).unwrap_or_else(|| {
                let ks = match kwargs.get("k") {
                    Some(Value::Array(items)) => items.iter().map(Value::as_u64).collect(),
                    Some(one) => one.as_u64().map(|k| vec![k]),
                    None => None,
                };
                match ks {
                    Some(ks) if !ks.is_empty() && ks.iter().all(|&k| k > 0) => Ok(Self {
                        name: "pass_at_k",
                        ks: ks.into_iter().map(|k| k as usize).collect(),
                    }),
                    _ => Err("metric `pass_at_k` needs `k`: a positive integer or a list of them (e.g. `k: [1]`)".to_owned()),
                }
            })),
            _ => None,
        }
    }

    /// The name as written in `metric_list`.
    pub fn name(&self) -> &str {
        self.name
    }

    /// The largest `k`, which needs at least that many generations per problem.
    pub fn max_k(&self) -> usize {
        self.ks.iter().copied().max().unwrap_or(1)
    }

    /// The result keys: `pass@<k>` for `pass_at_k` (code_eval's dict keys), `pass_at_1`.
    pub fn keys(&self) -> Vec<String> {
        match self.name {
            "pass_at_1" => vec![self.name.to_owned()],
            _ => self.ks.iter().map(|k| format!("pass@{k}")).collect(),
        }
    }

    /// Each key's value for one problem given which of its candidates passed.
    pub fn score(&self, passed: &[bool]) -> Vec<(String, f64)> {
        let correct = passed.iter().filter(|&&p| p).count();
        self.keys()
            .into_iter()
            .zip(&self.ks)
            .map(|(key, &k)| (key, pass_at_k(passed.len(), correct, k)))
            .collect()
    }
}

/// How generated programs are run.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeExecutionConfig {
    /// The Python interpreter (a command on `PATH` or a path).
    pub python: OsString,
    /// Time for one program (lm-eval's code_eval: 3 s).
    pub timeout: Duration,
    /// Programs run at once.
    pub workers: usize,
    /// `LimitsOnly` only on the user's explicit request.
    pub isolation: Isolation,
}

impl Default for CodeExecutionConfig {
    fn default() -> Self {
        Self {
            python: OsString::from("python3"),
            timeout: moebench_sandbox::python::CODE_EVAL_TIMEOUT,
            workers: 4,
            isolation: Isolation::Namespaces,
        }
    }
}

/// Runs candidate programs against their tests in the sandbox.
#[derive(Debug, Clone)]
pub struct CodeExecutor {
    checker: PythonChecker,
    workers: usize,
}

impl CodeExecutor {
    /// Sets the sandbox up (checking that the OS supports the isolation asked for) and
    /// resolves the interpreter.
    pub fn new(config: &CodeExecutionConfig) -> Result<Self, SandboxError> {
        let startup = Duration::from_secs(5);
        let policy = Policy {
            limits: Limits {
                wall_time: config.timeout + startup,
                cpu_seconds: (config.timeout + startup).as_secs(),
                ..Limits::default()
            },
            isolation: config.isolation,
        };
        let checker = PythonChecker::new(Sandbox::new(policy)?, &config.python, config.timeout)?;
        Ok(Self {
            checker,
            workers: config.workers.max(1),
        })
    }

    /// The interpreter programs run with.
    pub fn interpreter(&self) -> &std::path::Path {
        self.checker.interpreter()
    }

    /// Whether each `candidate + "\n" + reference` passes, running up to `workers` at once.
    pub fn passes(
        &self,
        candidates: &[String],
        reference: &str,
    ) -> Result<Vec<bool>, SandboxError> {
        let programs: Vec<String> = candidates
            .iter()
            .map(|candidate| format!("{candidate}\n{reference}"))
            .collect();
        let chunk = programs.len().div_ceil(self.workers).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = programs
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|program| {
                                self.checker.check(program).map(|v| v == Verdict::Passed)
                            })
                            .collect::<Result<Vec<bool>, SandboxError>>()
                    })
                })
                .collect();
            let mut passed = Vec::with_capacity(programs.len());
            for handle in handles {
                passed.extend(handle.join().expect("a sandbox worker panicked")?);
            }
            Ok(passed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_at_k_is_the_binomial_ratio() {
        // 1 - C(n-c, k)/C(n, k) computed with exact integers.
        fn exact(n: u64, c: u64, k: u64) -> f64 {
            let choose = |n: u64, k: u64| -> f64 {
                (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
            };
            if n - c < k {
                1.0
            } else {
                1.0 - choose(n - c, k) / choose(n, k)
            }
        }
        for (n, c, k) in [
            (10, 3, 1),
            (10, 3, 5),
            (20, 0, 5),
            (64, 1, 64),
            (200, 17, 100),
            (5, 5, 2),
        ] {
            let got = pass_at_k(n, c, k);
            let want = exact(n as u64, c as u64, k as u64);
            assert!(
                (got - want).abs() < 1e-12,
                "pass@{k}({n}, {c}) = {got}, want {want}"
            );
        }
        assert_eq!(pass_at_k(1, 1, 1), 1.0);
        assert_eq!(pass_at_k(1, 0, 1), 0.0);
        assert!((pass_at_k(4, 1, 1) - 0.25).abs() < 1e-15);
    }

    #[test]
    fn metrics_read_lm_eval_configs_and_name_their_keys() {
        let config = |name: &str, kwargs: Value| {
            CodeMetric::from_config(name, kwargs.as_object().unwrap_or(&Map::new()))
        };
        let humaneval = config("pass_at_k", json!({"k": [1, 10]})).unwrap().unwrap();
        assert_eq!(humaneval.keys(), ["pass@1", "pass@10"]);
        assert_eq!(humaneval.max_k(), 10);
        let mut passed = [false; 10];
        passed[3] = true;
        let scores = humaneval.score(&passed);
        assert_eq!(scores[0].0, "pass@1");
        assert!((scores[0].1 - 0.1).abs() < 1e-15);
        assert_eq!(scores[1], ("pass@10".to_owned(), 1.0));
        let mbpp = config("pass_at_1", Value::Null).unwrap().unwrap();
        assert_eq!(mbpp.keys(), ["pass_at_1"]);
        assert_eq!(mbpp.score(&[false]), [("pass_at_1".to_owned(), 0.0)]);
        assert!(config("acc", Value::Null).is_none());
        let bad = config("pass_at_k", Value::Null).unwrap().unwrap_err();
        assert!(bad.contains("needs `k`"), "{bad}");
        let bad = config("pass_at_1", json!({"k": 3})).unwrap().unwrap_err();
        assert!(bad.contains("no argument `k`"), "{bad}");
    }

    #[test]
    fn humaneval_predictions_prepend_the_prompt() {
        let doc = json!({"prompt": "def f():\n"});
        assert_eq!(
            humaneval_build_predictions(&doc, vec!["    return 1".into(), "    pass".into()])
                .unwrap(),
            ["def f():\n    return 1", "def f():\n    pass"]
        );
        assert!(humaneval_build_predictions(&json!({}), vec![]).is_err());
    }
}
