// Where the CLI writes. Commands never touch process.stdout directly, so that tests can run them
// in-process and read exactly what a user would see.

/** Text goes out as given: callers end their lines with '\n'. */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

export const processIo: CliIo = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
};
