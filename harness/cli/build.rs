//! Bake libtorch's directory (and, with the `python` feature, the directory of the libpython
//! pyo3 links) into the RUNPATH so binaries and tests run with no environment set (cargo
//! overrides LD_LIBRARY_PATH, see docs/architecture.md).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch}/lib");
    }
    // Set by moebench-pyhooks' build script (`links = "moebench_python"`) when it embeds
    // Python.
    if let Ok(dir) = std::env::var("DEP_MOEBENCH_PYTHON_LIBDIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
