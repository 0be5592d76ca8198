-- One database per Leadflow service (each service migrates its own schema at start-up).
CREATE DATABASE ingestion;
CREATE DATABASE scoring;
CREATE DATABASE qualification;
CREATE DATABASE handoff;
