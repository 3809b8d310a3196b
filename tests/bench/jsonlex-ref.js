// Runs the JSONLex conformance corpus through the reference implementation
// (Exprsn's src/shared/utils/jsonlex.js), for tests/bench/lua-bench.sh:
//   node jsonlex-ref.js PATH/TO/jsonlex.js CASES.jsonl SECONDS
// The reference is not part of this repository: the path comes from the
// caller (LEXBUS_JSONLEX_REFERENCE).  Prints {"evals_per_sec": N, "errors": E}.
'use strict';
const fs = require('fs');
const [refPath, casesPath, secsArg] = process.argv.slice(2);
const mod = require(refPath);
// The module's entry point: an `evaluate(expr, context)` function on the
// export, on its default export, or on an instance of the exported class.
function entry(m) {
  for (const c of [m, m && m.default]) {
    if (!c) continue;
    for (const name of ['evaluate', 'execute', 'process']) {
      if (typeof c[name] === 'function') return c[name].bind(c);
    }
    if (typeof c === 'function' && c.prototype) {
      try {
        const inst = new c();
        for (const name of ['evaluate', 'execute', 'process']) {
          if (typeof inst[name] === 'function') return inst[name].bind(inst);
        }
      } catch (e) { /* not a class */ }
    }
  }
  throw new Error('no evaluate/execute/process function in ' + refPath);
}
const evaluate = entry(mod);
const cases = fs.readFileSync(casesPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
  // Bare expressions are wrapped, as the corpus's expectations were made (README).
  .map((c) => ({ expr: c.bare ? { __jsonlex: true, expr: c.expr } : c.expr, context: c.context || {} }));
const secs = Number(secsArg || 2);
let evals = 0, errors = 0;
const t0 = process.hrtime.bigint();
for (;;) {
  for (const c of cases) {
    try { evaluate(c.expr, c.context); } catch (e) { errors++; }
    evals++;
  }
  if (Number(process.hrtime.bigint() - t0) / 1e9 >= secs) break;
}
const t = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(JSON.stringify({ evals_per_sec: Math.round(evals / t), errors: errors, cases: cases.length }));
