//! Duplicated keys ([[key_pairs]]) checked against two simulated Key
//! Protect regions holding the same imported material.

mod interchange;
mod reload;
mod services;
