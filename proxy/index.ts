// The proxy's public surface, used by the CLI (`pgvpd serve`, `pgvpd demo`) and by tests.
export { startProxy, type ProxyHandle, type ProxyOptions } from './server.js';
export { loadConfig, defaults, ConfigError, type ProxyConfig, type ConfigKey } from './config.js';
export { createLogger, type Logger } from './logger.js';
