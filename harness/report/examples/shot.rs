fn main() {
    let root = std::path::Path::new("/tmp/shot");
    let _ = std::fs::remove_dir_all(root);
    let mut spec = moebench_report::synthetic::Synthetic::example();
    spec.start_time = "2026-01-01T00:00:00Z".into();
    spec.write(&root.join("history/a")).unwrap();
    spec.rows[0].accuracy = 0.6;
    spec.start_time = "2026-01-02T00:00:00Z".into();
    spec.write(&root.join("history/b")).unwrap();
    spec.rows[0].accuracy = 0.64;
    spec.start_time = "2026-01-03T00:00:00Z".into();
    spec.write(&root.join("run")).unwrap();
    let w = moebench_report::render(&root.join("run"), &[root.join("history")], None).unwrap();
    println!("{}", w.html.display());
}
