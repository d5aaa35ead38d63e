//! With `embed`: bake the directory of the libpython that pyo3 links into the RUNPATH of this
//! crate's tests, so that they load the same libpython as the interpreter pyo3 was configured
//! with (cargo overrides LD_LIBRARY_PATH; see docs/architecture.md), and hand it to the
//! binary's build script as `DEP_MOEBENCH_PYTHON_LIBDIR`.
fn main() {
    #[cfg(feature = "embed")]
    {
        let config = pyo3_build_config::get();
        if let Some(dir) = config.lib_dir() {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            println!("cargo:libdir={dir}");
        }
    }
}
