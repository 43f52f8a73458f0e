//! The scale-out samples: the Kubernetes Indexed Job manifest parses and shards correctly,
//! the Slurm array script agrees with itself, and the docs show both files verbatim.

use std::path::Path;

use layerzero_ablate::Shard;
use yaml_rust2::{Yaml, YamlLoader};

fn data(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The N in `--shard <something>/N` within a command line.
fn shard_count(command: &str) -> usize {
    let after = command
        .split("--shard")
        .nth(1)
        .unwrap_or_else(|| panic!("no --shard in {command:?}"));
    let arg = after.split_whitespace().next().unwrap().trim_matches('"');
    let (_, n) = arg.rsplit_once('/').unwrap();
    n.parse()
        .unwrap_or_else(|_| panic!("bad --shard argument {arg:?}"))
}

#[test]
fn indexed_job_manifest_is_a_sharded_indexed_job() {
    let docs = YamlLoader::load_from_str(&data("indexed-job.yaml")).unwrap();
    assert_eq!(docs.len(), 1);
    let job = &docs[0];
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    assert_eq!(job["kind"].as_str(), Some("Job"));
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let completions = spec["completions"].as_i64().expect("spec.completions");
    let parallelism = spec["parallelism"].as_i64().expect("spec.parallelism");
    assert!(completions >= 1 && (1..=completions).contains(&parallelism));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));
    let containers = pod["containers"].as_vec().expect("containers");
    assert_eq!(containers.len(), 1);
    let words: Vec<&str> = ["command", "args"]
        .iter()
        .flat_map(|k| containers[0][*k].as_vec().map(Vec::as_slice).unwrap_or(&[]))
        .filter_map(Yaml::as_str)
        .collect();
    let command = words.join(" ");
    assert!(command.contains("layerzero ablate"), "{command}");
    assert!(
        command.contains("--shard \"${JOB_COMPLETION_INDEX}/"),
        "{command}"
    );
    assert_eq!(shard_count(&command) as i64, completions, "{command}");
    // Every index the Job hands out is a valid shard of that count.
    for k in 0..completions as usize {
        let shard: Shard = format!("{k}/{completions}").parse().unwrap();
        assert_eq!(shard.index, k);
    }
    // Each pod writes its own part file.
    assert!(
        command.contains("part-${JOB_COMPLETION_INDEX}.json"),
        "{command}"
    );
    // The shared volume the part files go to is mounted.
    let mount = &containers[0]["volumeMounts"][0];
    assert_eq!(mount["name"].as_str(), Some("data"));
    assert_eq!(pod["volumes"][0]["name"].as_str(), Some("data"));
}

#[test]
fn slurm_array_matches_its_shard_count() {
    let script = data("slurm-array.sh");
    let array = script
        .lines()
        .find_map(|l| l.strip_prefix("#SBATCH --array="))
        .expect("#SBATCH --array");
    let (first, last) = array.split_once('-').unwrap();
    let n: usize = script
        .lines()
        .find_map(|l| l.strip_prefix("N="))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("N=<count>");
    assert_eq!(first, "0");
    assert_eq!(last.parse::<usize>().unwrap() + 1, n);
    assert!(script.contains("--shard \"$SLURM_ARRAY_TASK_ID/$N\""));
}

#[test]
fn scale_out_docs_show_both_files_verbatim() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/scale-out.md");
    let page = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    for file in ["indexed-job.yaml", "slurm-array.sh"] {
        assert!(
            page.contains(data(file).trim_end()),
            "the scale-out page does not show tests/data/{file} verbatim"
        );
    }
    assert!(page.contains("layerzero ablate merge"));
}
