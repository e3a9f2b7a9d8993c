// A progress bar on stderr, shown only on a terminal and only for work that has run over a second.
const BAR_WIDTH = 30;
const SHOW_AFTER_MS = 1000;
const REDRAW_MS = 100;

export interface Progress {
  update(done: number, total: number, label?: string): void;
  done(): void;
}

export function progressBar(title: string, format: (n: number) => string = String): Progress {
  const stream = process.stderr;
  const started = Date.now();
  let lastDraw = 0;
  let drawn = false;
  return {
    update(done, total, label) {
      const now = Date.now();
      if (!stream.isTTY || now - started < SHOW_AFTER_MS || now - lastDraw < REDRAW_MS) return;
      lastDraw = now;
      const ratio = total > 0 ? Math.min(1, done / total) : 0;
      const filled = Math.round(ratio * BAR_WIDTH);
      const bar = '#'.repeat(filled) + '-'.repeat(BAR_WIDTH - filled);
      const pct = `${Math.floor(ratio * 100)}%`.padStart(4);
      stream.write(
        `\r${title} [${bar}] ${pct} ${format(done)}/${format(total)}${label ? ` ${label}` : ''}\x1b[K`,
      );
      drawn = true;
    },
    done() {
      if (drawn) stream.write('\r\x1b[K');
      drawn = false;
    },
  };
}

/** Run `work` with a progress bar that it updates, and take the bar down however it ends. */
export async function withProgressBar<T>(
  title: string,
  format: (n: number) => string,
  work: (bar: Progress) => Promise<T>,
): Promise<T> {
  const bar = progressBar(title, format);
  try {
    return await work(bar);
  } finally {
    bar.done();
  }
}
