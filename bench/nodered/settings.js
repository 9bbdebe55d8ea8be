// settings.js — Node-RED settings for the benchmark peer (bench/run.sh, issue 8).
// Editor/admin on 127.0.0.1 only (port from NR_UI_PORT), telemetry, update
// notifications, diagnostics and palette installs off, flows read from
// bench/nodered/flow.json (ports and sizes come from environment variables
// the harness sets: MB_PORT, MQ_PORT, NR_MODE, NR_DEVICES, NR_TAGS; or
// NR_FLOW_FILE for a variant of the flow), user
// directory in a temp dir given with -u so nothing is written into the repo.
const path = require("path");
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: parseInt(process.env.NR_UI_PORT || "18800", 10),
    flowFile: process.env.NR_FLOW_FILE || path.join(__dirname, "flow.json"),
    flowFilePretty: true,
    credentialSecret: false,
    readOnly: true,
    telemetry: { enabled: false, updateNotification: false },
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    externalModules: {
        autoInstall: false,
        palette: { allowInstall: false, allowUpdate: false, allowUpload: false },
        modules: { allowInstall: false }
    },
    logging: { console: { level: "warn", metrics: false, audit: false } },
    functionGlobalContext: {},
    editorTheme: { projects: { enabled: false }, tours: false }
};
