//! The loader's tests: the bad-configuration table and the good cases.
