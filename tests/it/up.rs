//! `edgebox up`: start, supervise and stop a deployment.
