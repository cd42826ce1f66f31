/* salad report page: renders the JSON block #salad-data (salad_eval/page/build.py writes it).
   Plain ES2017, no library: the overview once, then the items list, a page of rows at a time,
   each item's details only when it is opened. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("salad-data").textContent);
  var COMPARISON = D.kind === "comparison";
  var CONDS = D.conditions;
  var VOICES = D.voices;
  var MAIN = ["text@base", "text@speech", "speech@speech", "speech@cascade"];
  var PARTS = ["gap", "forgetting", "misalignment", "cascade_gap"];
  var OUTCOMES = [  /* value, label, what it means */
    ["all", "all items", "Every item, whatever its answers."],
    ["misaligned", "misaligned", "Misaligned: right in text@speech, wrong in speech@speech (in a voice shown)."],
    ["forgotten", "forgotten", "Forgotten: right in text@base, wrong in text@speech."],
    ["rescued", "rescued by the cascade", "Rescued by the cascade: wrong in speech@speech, right in speech@cascade (in a voice shown)."],
    ["silence", "listens to silence", "Listens to silence: right under the silent control (in a voice shown)."]
  ];
  var BITS = { misaligned: 1, rescued: 2, silence: 4 };
  var FLIPS = [["", "flipped or not"], ["any", "in any condition"]].concat(CONDS.map(function (c) { return [c, "in " + c]; }));
  var PAGE = 100;
  var state = { task: "", domain: "", speaker: "", acoustics: "", outcome: "all", run: 0, flip: "", q: "" };
  var shown = [];
  var rendered = 0;

  /* ---- helpers ---- */
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v === true ? "" : v);
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function fixed(x, digits) {
    var s = x.toFixed(digits);
    return /^-0\.?0*$/.test(s) ? s.slice(1) : s;
  }
  function pts(f) {
    if (!f) return "–";
    return fixed(100 * f.value, 1) + " [" + fixed(100 * f.ci_low, 1) + ", " + fixed(100 * f.ci_high, 1) + "]";
  }
  function ptsNode(f, key) {  /* the value, its interval below it (its text reads as pts(f)) */
    if (!f) return el("span", { "data-figure": key, text: "–" });
    return el("span", { class: "figure", "data-figure": key }, [el("span", { class: "v", text: fixed(100 * f.value, 1) }), " ",
      el("span", { class: "ci", text: "[" + fixed(100 * f.ci_low, 1) + ", " + fixed(100 * f.ci_high, 1) + "]" })]);
  }
  function sig(f) {
    if (!f) return "–";
    return f.value.toPrecision(3) + " [" + f.ci_low.toPrecision(3) + ", " + f.ci_high.toPrecision(3) + "]";
  }
  function letter(i) { return String.fromCharCode(65 + i); }
  function voiceName(v) { return v < 0 ? "–" : VOICES[v].name; }
  function table(caption, head, rows, cls) {
    var thead = el("thead", {}, [el("tr", {}, head.map(function (h) { return el("th", { scope: "col", text: h }); }))]);
    var tbody = el("tbody", {}, rows.map(function (r) {
      return el("tr", {}, r.map(function (c, i) {
        if (c instanceof Node) return el(i ? "td" : "th", i ? {} : { scope: "row" }, [c]);
        return el(i ? "td" : "th", i ? { text: c } : { scope: "row", text: c });
      }));
    }));
    return el("div", { class: "scroll" }, [el("table", { class: cls || "" }, [el("caption", { text: caption }), thead, tbody])]);
  }
  function fig(value, key) { return el("span", { class: "figure", "data-figure": key, text: value }); }

  /* ---- overview ---- */
  function subtitle() {
    var r = D.runs[0];
    var parts = [];
    if (COMPARISON) {
      parts.push(D.runs.length + " runs: " + D.runs.map(function (x) { return x.name; }).join(", "));
    } else {
      if (r.models.speech) parts.push("speech LLM " + r.models.speech);
      if (r.models.text) parts.push("text LLM " + r.models.text);
      if (r.models.cascade) parts.push("ASR " + r.models.cascade);
      parts.push(r.n_items + " items of " + r.tasks.join(", "));
      parts.push(r.voices.length + " voice(s)");
      parts.push("metric " + r.metric);
      if (r.created) parts.push("written " + r.created);
    }
    document.getElementById("subtitle").textContent = parts.join(" · ");
  }

  function decomposition(caption, tables, what) {
    var names = Object.keys(tables);
    if (!names.length) return null;
    var conds = MAIN.filter(function (c) { return names.some(function (n) { return tables[n].accuracy[c]; }); });
    var parts = PARTS.filter(function (p) { return names.some(function (n) { return tables[n][p]; }); });
    var head = [what, "items"].concat(conds, parts.map(function (p) { return p.replace("_", " "); }));
    var rows = names.map(function (n) {
      var t = tables[n];
      return [n, String(t.n_items)].concat(
        conds.map(function (c) { return ptsNode(t.accuracy[c], what + ":" + n + ":acc:" + c); }),
        parts.map(function (p) { return ptsNode(t[p], what + ":" + n + ":" + p); }));
    });
    return table(caption, head, rows, "numbers");
  }

  function runOverview(r, body) {
    var o = r.overall;
    var level = Math.round(100 * r.ci_level) + "% CI";
    var cards = [["gap", "Gap", "text@base − speech@speech"],
      ["forgetting", "Forgetting", "text@base − text@speech"],
      ["misalignment", "Misalignment", "text@speech − speech@speech"],
      ["cascade_gap", "Cascade gap", "text@base − speech@cascade"]];
    body.appendChild(el("div", { class: "cards" }, cards.filter(function (c) { return o[c[0]]; }).map(function (c) {
      return el("div", { class: "card" }, [
        el("h3", { text: c[1] }),
        el("p", { class: "big" }, [ptsNode(o[c[0]], c[0])]),
        el("p", { class: "unit", text: "points, " + level + " · " + c[2] })
      ]);
    })));
    if (r.controls) {
      body.appendChild(el("h3", { text: "Does the model listen? (controls)" }));
      body.appendChild(el("p", { id: COMPARISON ? null : "controls", class: "verdict" + (/^WARNING/.test(r.controls) ? " warn" : ""), text: r.controls }));
    }
    var rows = CONDS.filter(function (c) { return o.accuracy[c]; }).map(function (c) {
      return [c, D.meanings[c], fig(pts(o.accuracy[c]), "acc:" + c), String(o.accuracy[c].n)];
    });
    body.appendChild(table("Accuracy per condition, " + r.metric + " (%, " + level + ")", ["condition", "what it is", "accuracy", "items"], rows, "numbers"));
    [["task", "By task"], ["domain", "By domain"], ["voice", "By voice"]].forEach(function (b) {
      var t = decomposition(b[1] + " (%, " + level + ")", r.by[b[0]], b[0]);
      if (t) body.appendChild(t);
    });
    if (r.robustness.length) {
      body.appendChild(table("By acoustic condition (%, " + level + "; WER as a fraction)",
        ["voice", "speaker", "acoustics", "items", "speech@speech", "speech@cascade", "gap", "cascade WER", "listens"],
        r.robustness.map(function (x) {
          return [x.voice, x.speaker, x.acoustics, String(x.n_items), ptsNode(x["speech@speech"]), ptsNode(x["speech@cascade"]), ptsNode(x.gap),
            x.cascade_wer ? fixed(x.cascade_wer.value, 2) : "–", x.listens === null ? "–" : x.listens ? "yes" : "no"];
        }), "numbers"));
    } else {
      body.appendChild(el("p", { class: "note", text: "Every clip was heard clean: no acoustic condition in this run." }));
    }
    var na = Object.keys(r.no_answer || {});
    if (na.length) {
      body.appendChild(table("Replies with no answer (%, " + level + ")", ["condition", "no answer"],
        na.map(function (c) { return [c, fig(pts(r.no_answer[c]), "no_answer:" + c)]; }), "numbers"));
    }
    var corpus = Object.keys(r.corpus || {});
    if (corpus.length) {
      body.appendChild(table("Corpus forgetting F and misalignment M (nats per token, " + level + ")", ["divergence", "value"],
        corpus.map(function (k) { return [k === "F" ? "F, forgetting" : "M, misalignment", fig(sig(r.corpus[k]), "corpus:" + k)]; }), "numbers"));
    }
    plots(r.plots, body);
  }

  function plots(list, body) {
    if (!list || !list.length) return;
    body.appendChild(el("h3", { text: "Plots" }));
    body.appendChild(el("div", { class: "plots" }, list.map(function (p) {
      return el("figure", {}, [el("img", { src: p.src, alt: "plot: " + p.name, loading: "lazy" }), el("figcaption", { text: p.name })]);
    })));
  }

  function comparisonOverview(body) {
    var c = D.comparison;
    body.appendChild(table("The runs side by side (%, 95% CI)", ["task", "run", "items", "speech acc", "gap", "forgetting", "misalignment"],
      c.rows.map(function (r) {
        return [r.task, r.run, String(r.n_items), ptsNode(r["speech acc"]), ptsNode(r.gap), ptsNode(r.forgetting), ptsNode(r.misalignment)];
      }), "numbers"));
    if (c.paired.length) {
      body.appendChild(el("h3", { text: "Paired comparison" }));
      body.appendChild(el("p", { class: "note", text: c.note }));
      body.appendChild(table("Each other run (b) against the first (a), b − a in points", ["a", "b", "task", "condition", "items in common", "a acc", "b acc",
        "b − a [95% CI]", "b right / a wrong", "a right / b wrong", "McNemar p", "sign-flip p (items)"],
      c.paired.map(function (r) {
        var d = r.diff;
        var diff = (100 * d.value >= 0 ? "+" : "") + fixed(100 * d.value, 1) + " [" + fixed(100 * d.ci_low, 1) + ", " + fixed(100 * d.ci_high, 1) + "]";
        var mc = r.p_value === null ? ["–", "–", "–"] : [String(r.b_right_a_wrong), String(r.a_right_b_wrong), r.p_value.toPrecision(3)];
        return [r.a, r.b, r.task, r.condition, String(r.n_items), fixed(100 * r.a_value, 1), fixed(100 * r.b_value, 1), diff].concat(mc, [r.p_items.toPrecision(3)]);
      }), "numbers"));
    }
    c.notes.forEach(function (n) { body.appendChild(el("p", { class: "note", text: n })); });
    D.runs.forEach(function (r) {
      if (r.controls) body.appendChild(el("p", { class: "verdict" + (/^WARNING/.test(r.controls) ? " warn" : "") }, [el("strong", { text: r.name + ": " }), r.controls]));
    });
    plots(c.plots, body);
  }

  function overview() {
    var body = document.getElementById("overview-body");
    body.textContent = "";
    if (COMPARISON) comparisonOverview(body);
    else runOverview(D.runs[0], body);
  }

  /* ---- filters ---- */
  function uniq(values) { return values.filter(function (v, i) { return v !== null && values.indexOf(v) === i; }).sort(); }
  function select(id, label, options, onchange) {
    var s = el("select", { id: id, name: id }, options.map(function (o) { return el("option", { value: o[0], text: o[1] }); }));
    s.addEventListener("change", function () { onchange(s.value); update(); });
    return el("div", { class: "filter" }, [el("label", { for: id, text: label }), s]);
  }
  function filters() {
    var form = document.getElementById("filters");
    var all = function (xs, what) { return [["", "all " + what]].concat(xs.map(function (x) { return [x, x]; })); };
    form.appendChild(select("f-task", "Task", all(uniq(D.items.map(function (i) { return i.task; })), "tasks"), function (v) { state.task = v; }));
    form.appendChild(select("f-domain", "Domain", all(uniq(D.items.map(function (i) { return i.domain; })), "domains"), function (v) { state.domain = v; }));
    form.appendChild(select("f-voice", "Voice", all(uniq(VOICES.map(function (v) { return v.speaker; })), "voices"), function (v) { state.speaker = v; }));
    form.appendChild(select("f-acoustics", "Acoustic condition", all(uniq(VOICES.map(function (v) { return v.acoustics; })), "conditions"), function (v) { state.acoustics = v; }));
    form.appendChild(select("f-outcome", "Outcome", OUTCOMES, function (v) { state.outcome = v; }));
    if (COMPARISON) {
      form.appendChild(select("f-run", "Outcome in run", D.runs.map(function (r, n) { return [String(n), r.name]; }), function (v) { state.run = +v; }));
      form.appendChild(select("f-flip", "Flipped from " + D.runs[0].name, FLIPS, function (v) { state.flip = v; }));
    }
    var search = el("input", { type: "search", id: "f-search", name: "f-search", placeholder: "words of the context, choices, replies, transcripts", autocomplete: "off" });
    var timer = null;
    search.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { state.q = search.value.trim().toLowerCase(); update(); }, 120);
    });
    form.appendChild(el("div", { class: "filter wide" }, [el("label", { for: "f-search", text: "Search" }), search]));
    form.appendChild(el("p", { id: "outcome-help", class: "note wide" }));
    form.addEventListener("submit", function (e) { e.preventDefault(); });
  }

  function voiceMask() {
    return VOICES.map(function (v) {
      return (!state.speaker || v.speaker === state.speaker) && (!state.acoustics || v.acoustics === state.acoustics);
    });
  }
  function searchText(item) {
    if (item._text === undefined) {
      var parts = [item.task, item.id, item.domain];
      (item.context || []).forEach(function (p) { parts.push(p[1]); });
      (item.choices || []).concat(item.options || []).forEach(function (c) { parts.push(c); });
      item.runs.forEach(function (r) {
        if (!r) return;
        r.rows.forEach(function (row) {
          if (row.tr) parts.push(row.tr);
          if (row.gen) parts.push(row.gen.replies.join(" "));
        });
      });
      item._text = parts.join("\n").toLowerCase();
    }
    return item._text;
  }
  function has(item, outcome, vm) {
    var r = item.runs[state.run];
    if (!r) return false;
    if (outcome === "all") return true;
    if (outcome === "forgotten") return !!r.forgotten;
    var bit = BITS[outcome];
    return Object.keys(r.masks).some(function (v) { return vm[v] && (r.masks[v] & bit); });
  }
  function flipped(item, cond, vm) {
    return (item.flips || []).some(function (f) {
      return (cond === "any" || CONDS[f[1]] === cond) && (f[2] < 0 || vm[f[2]]);
    });
  }
  function update() {
    var vm = voiceMask();
    var counts = {}, flipCounts = {};
    OUTCOMES.forEach(function (o) { counts[o[0]] = 0; });
    FLIPS.forEach(function (f) { flipCounts[f[0]] = 0; });
    shown = [];
    D.items.forEach(function (item, n) {
      if (state.task && item.task !== state.task) return;
      if (state.domain && item.domain !== state.domain) return;
      if (state.q && searchText(item).indexOf(state.q) < 0) return;
      var flipOk = !state.flip || flipped(item, state.flip, vm);
      var outcomeOk = has(item, state.outcome, vm);
      if (flipOk) OUTCOMES.forEach(function (o) { if (has(item, o[0], vm)) counts[o[0]] += 1; });
      if (outcomeOk && COMPARISON) FLIPS.forEach(function (f) { if (!f[0] || flipped(item, f[0], vm)) flipCounts[f[0]] += 1; });
      if (flipOk && outcomeOk) shown.push(n);
    });
    var options = document.getElementById("f-outcome").options;
    OUTCOMES.forEach(function (o, i) { options[i].textContent = o[1] + " (" + counts[o[0]] + ")"; });
    if (COMPARISON) {
      var flipOptions = document.getElementById("f-flip").options;
      FLIPS.forEach(function (f, i) { flipOptions[i].textContent = f[1] + " (" + flipCounts[f[0]] + ")"; });
    }
    OUTCOMES.forEach(function (o) { if (o[0] === state.outcome) document.getElementById("outcome-help").textContent = o[2]; });
    var count = document.getElementById("count");
    count.setAttribute("data-count", shown.length);
    count.textContent = shown.length + " of " + D.items.length + " items";
    var list = document.getElementById("list");
    list.textContent = "";
    rendered = 0;
    more();
  }
  function more() {
    var list = document.getElementById("list");
    var vm = voiceMask();
    var end = Math.min(shown.length, rendered + PAGE);
    var frag = document.createDocumentFragment();
    for (var k = rendered; k < end; k++) frag.appendChild(row(shown[k], vm));
    list.appendChild(frag);
    rendered = end;
    var button = document.getElementById("more");
    button.hidden = rendered >= shown.length;
    button.textContent = "Show " + Math.min(PAGE, shown.length - rendered) + " more of " + (shown.length - rendered) + " items";
  }

  /* ---- one item ---- */
  function rowsOf(run, vm) {
    return (run ? run.rows : []).filter(function (r) { return r.v < 0 || vm[r.v]; })
      .sort(function (a, b) { return a.c - b.c || a.v - b.v; });
  }
  function badges(item, vm) {
    var run = item.runs[state.run];
    var marks = [];
    if (!run) return [el("span", { class: "badge", text: "not in " + D.runs[state.run].name })];
    CONDS.forEach(function (c, ci) {
      var rs = rowsOf(run, vm).filter(function (r) { return r.c === ci; });
      if (!rs.length) return;
      var right = rs.filter(function (r) { return r.ok; }).length;
      var text = rs.length === 1 ? (right ? "✓" : "✗") : right + "/" + rs.length;
      var cls = right === rs.length ? "ok" : right ? "some" : "bad";
      marks.push(el("span", { class: "badge " + cls, title: c + ": " + right + " of " + rs.length + " right" }, [c.replace("speech@speech:", "") + " " + text]));
    });
    ["misaligned", "forgotten", "rescued", "silence"].forEach(function (o) {
      if (has(item, o, vm)) marks.push(el("span", { class: "badge tag", text: o === "silence" ? "listens to silence" : o }));
    });
    var f = (item.flips || []).filter(function (x) { return x[2] < 0 || vm[x[2]]; });
    if (f.length) marks.push(el("span", { class: "badge flip", "data-flips": f.length, text: f.length + " flip" + (f.length > 1 ? "s" : "") }));
    return marks;
  }
  function row(n, vm) {
    var item = D.items[n];
    var details = el("details", { "data-item": item.task + "/" + item.id }, [
      el("summary", {}, [
        el("span", { class: "iid", text: item.task + " / " + item.id }), " ",
        el("span", { class: "dom", text: item.domain }), " ",
        el("span", { class: "marks" }, badges(item, vm))
      ])
    ]);
    details.addEventListener("toggle", function () {
      if (details.open && !details._drawn) {
        details._drawn = true;
        details.appendChild(detail(item, voiceMask()));
      }
    });
    return el("li", {}, [details]);
  }

  function detail(item, vm) {
    var box = el("div", { class: "detail" });
    if (!item.context) {
      box.appendChild(el("p", { class: "note", text: "This run wrote no heard.jsonl (it predates it): its text and clips are not on this page, only its answers." }));
    } else {
      box.appendChild(el("h4", { text: "Context" }));
      box.appendChild(el("p", { class: "context" }, item.context.map(function (p) {
        return p[0] ? el("mark", { class: "spoken", title: "spoken in the speech conditions" }, [p[1]]) : document.createTextNode(p[1]);
      })));
      box.appendChild(el("p", { class: "legend" }, [el("mark", { class: "spoken", text: "marked" }), " text is spoken in the speech conditions; the rest stays text."]));
      box.appendChild(el("h4", { text: "Choices" }));
      var texts = item.options && item.options.length ? item.options : item.choices;
      box.appendChild(el("ol", { class: "choices", type: "A" }, texts.map(function (c, i) {
        var right = i === item.target;
        return el("li", { class: right ? "target" : "" }, [c, right ? el("strong", { text: " ← right answer" }) : null]);
      })));
    }
    box.appendChild(answers(item, vm));
    var heardBy = {};  /* one line per voice and transcript, naming the runs that heard it */
    var order = [];
    item.runs.forEach(function (run, r) {
      rowsOf(run, vm).forEach(function (x) {
        if (x.tr === undefined && x.wer === undefined) return;
        var k = [x.v, x.tr, x.wer].join("\u0000");
        if (!heardBy[k]) { heardBy[k] = { x: x, runs: [] }; order.push(k); }
        heardBy[k].runs.push(D.runs[r].name);
      });
    });
    var cascade = order.map(function (k) {
      var x = heardBy[k].x;
      var who = voiceName(x.v) + (COMPARISON ? " (" + heardBy[k].runs.join(", ") + ")" : "");
      return el("li", {}, [el("strong", { text: who + ": " }), x.tr !== undefined ? el("q", { text: x.tr }) : "(transcript not recorded)",
        x.wer !== undefined ? " — WER " + fixed(x.wer, 2) : ""]);
    });
    if (cascade.length) {
      box.appendChild(el("h4", { text: "What the cascade heard (ASR transcript)" }));
      box.appendChild(el("ul", { class: "plain" }, cascade));
    }
    box.appendChild(listen(item, vm));
    return box;
  }

  function answerOf(x) { return x.p !== undefined ? letter(x.p) : x.gen ? (x.gen.letters[0] || "no answer") : "–"; }
  function rightOf(x) {
    return (x.ok ? "✓ right" : "✗ wrong") + (x.gen && x.gen.samples > 1 ? " (" + x.gen.right + "/" + x.gen.samples + ")" : "");
  }
  function answers(item, vm) {
    return el("div", {}, [el("h4", { text: "Answers" }), COMPARISON ? sideBySide(item, vm) : oneRun(item, vm)]);
  }
  function oneRun(item, vm) {
    var rows = rowsOf(item.runs[0], vm);
    var n = item.choices ? item.choices.length : 0;
    rows.forEach(function (x) { if (x.lp) n = Math.max(n, x.lp.length); });
    var generated = rows.some(function (x) { return x.gen; });
    var scored = rows.some(function (x) { return x.lp; });
    var head = ["condition", "voice", "answer", "right?"];
    for (var i = 0; scored && i < n; i++) head.push("log-prob " + letter(i) + (item.target === i ? " (right)" : ""));
    if (generated) head = head.concat(["reply", "letter read"]);
    return table("Answers per condition" + (scored ? " (log-prob of each choice; the chosen one in bold)" : ""), head, rows.map(function (x) {
      var cells = [CONDS[x.c], voiceName(x.v), answerOf(x), el("span", { class: x.ok ? "ok" : "bad", text: rightOf(x) })];
      for (var i = 0; scored && i < n; i++) {
        var lp = x.lp && x.lp[i] !== undefined ? x.lp[i].toFixed(2) : "–";
        cells.push(x.p === i ? el("strong", { text: lp }) : lp);
      }
      if (generated) {
        var reply = x.gen ? x.gen.replies[0] : "";
        cells.push(x.gen ? el("q", { text: reply.length > 240 ? reply.slice(0, 240) + "…" : reply }) : "–");
        cells.push(x.gen ? x.gen.letters.map(function (l) { return l || "no answer"; }).join(", ") : "–");
      }
      return cells;
    }), "answers");
  }
  function sideBySide(item, vm) {
    var keys = [];
    var byRun = item.runs.map(function (run) {
      var m = {};
      rowsOf(run, vm).forEach(function (x) {
        var k = x.c + ":" + x.v;
        if (keys.indexOf(k) < 0) keys.push(k);
        m[k] = x;
      });
      return m;
    });
    keys.sort(function (a, b) { var p = a.split(":"), q = b.split(":"); return p[0] - q[0] || p[1] - q[1]; });
    var head = ["condition", "voice"].concat(D.runs.map(function (r) { return r.name; }));
    var flips = [];
    var rows = keys.map(function (k) {
      var parts = k.split(":");
      var first = byRun[0][k];
      var flip = false;
      var cells = [CONDS[+parts[0]], voiceName(+parts[1])].concat(byRun.map(function (m, r) {
        var x = m[k];
        if (!x) return "–";
        var changed = r > 0 && first && first.ok !== x.ok;
        flip = flip || changed;
        var lp = x.lp && x.p !== undefined ? " (log-prob " + x.lp[x.p].toFixed(2) + ")" : "";
        var reply = x.gen ? " “" + x.gen.replies[0].slice(0, 80) + "”" : "";
        return el("span", { class: (x.ok ? "ok" : "bad") + (changed ? " flipped" : "") },
          [answerOf(x) + " " + rightOf(x) + lp + reply + (changed ? " — flipped" : "")]);
      }));
      flips.push(flip);
      return cells;
    });
    var t = table("Each run's answer per condition (chosen choice, right or wrong; a change from " + D.runs[0].name + " is a flip)", head, rows, "answers");
    var trs = t.querySelectorAll("tbody tr");
    flips.forEach(function (f, i) { if (f) { trs[i].className = "flip"; trs[i].setAttribute("data-flip", rows[i][0]); } });
    return t;
  }

  var silences = {};
  function silence(seconds) {
    var n = Math.max(1, Math.round(seconds * 16000));
    if (!silences[n]) {
      var buffer = new ArrayBuffer(44 + 2 * n);
      var v = new DataView(buffer);
      var text = function (at, s) { for (var i = 0; i < s.length; i++) v.setUint8(at + i, s.charCodeAt(i)); };
      text(0, "RIFF"); v.setUint32(4, 36 + 2 * n, true); text(8, "WAVE"); text(12, "fmt ");
      v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
      v.setUint32(24, 16000, true); v.setUint32(28, 32000, true); v.setUint16(32, 2, true);
      v.setUint16(34, 16, true); text(36, "data"); v.setUint32(40, 2 * n, true);
      silences[n] = URL.createObjectURL(new Blob([buffer], { type: "audio/wav" }));
    }
    return silences[n];
  }
  function player(id, label, src, seconds) {
    var a = id ? D.audio[id] : { src: src, s: seconds };
    if (!a || a.missing !== undefined) {
      return el("div", { class: "player missing", role: "note", "data-missing": id }, [
        el("span", { class: "plabel", text: label }), el("span", { text: "Clip missing: " + (a ? D.missing[a.missing] : "not on this page") + "." })]);
    }
    return el("div", { class: "player" }, [
      el("span", { class: "plabel", text: label }),
      el("audio", { controls: true, preload: "metadata", src: a.src, "aria-label": label, "data-clip": id || "silence", "data-seconds": a.s })
    ]);
  }
  function listen(item, vm) {
    var box = el("div", { class: "listen" }, [el("h4", { text: "Listen" })]);
    var spoken = (item.context || []).filter(function (p) { return p[0]; }).map(function (p) { return p[1]; });
    var any = false;
    VOICES.forEach(function (voice, v) {
      if (!vm[v]) return;
      var heard = [];
      item.runs.forEach(function (run, r) { if (run && run.heard[v]) heard.push([r, run.heard[v]]); });
      if (!heard.length) return;
      any = true;
      var group = el("div", { class: "voice", role: "group", "aria-label": "clips of voice " + voice.name }, [el("h5", { text: voice.name })]);
      var seen = {};
      heard.forEach(function (pair) {
        var h = pair[1];
        var fresh = h.clips.some(function (c) { return !seen[c]; });
        if (pair[0] > 0 && !fresh) return;  /* a later run that heard the same clips */
        var whose = pair[0] > 0 ? " (" + D.runs[pair[0]].name + ")" : "";
        h.clips.forEach(function (c, k) {
          if (seen[c]) return;
          seen[c] = true;
          var said = spoken[k] !== undefined ? ": “" + spoken[k] + "”" : "";
          group.appendChild(player(c, voice.name + ", clip " + (k + 1) + " of " + h.clips.length + whose + said));
        });
        var quality = "synthesis check: WER " + (h.wer === null || h.wer === undefined ? "–" : fixed(h.wer, 2)) +
          ", CER " + (h.cer === null || h.cer === undefined ? "–" : fixed(h.cer, 2));
        group.appendChild(el("p", { class: "quality" + (h.flag ? " flagged" : "") }, [
          h.flag ? el("strong", { text: "⚑ flagged: its ASR transcript is far from the text. " }) : null, quality,
          h.asr.some(function (t) { return t; }) ? el("span", {}, [" · ASR heard ", el("q", { text: h.asr.join(" ") })]) : null]));
        if (CONDS.indexOf("speech@speech:silent") >= 0) {
          h.sec.forEach(function (s, k) {
            group.appendChild(player(null, "silent control, " + voice.name + whose + ": silence of " + s.toFixed(2) + " s in place of clip " + (k + 1), silence(s), s));
          });
        }
        (h.shuf ? h.shuf.clips : []).forEach(function (c, k) {
          group.appendChild(player(c, "shuffled control, " + voice.name + whose + ": item " + h.shuf.item + "'s clip in place of clip " + (k + 1)));
        });
      });
      box.appendChild(group);
    });
    if (!any) box.appendChild(el("p", { class: "note", text: "No clip of this item is on this page." }));
    return box;
  }

  subtitle();
  overview();
  filters();
  update();
  document.getElementById("more").addEventListener("click", more);
  if ("IntersectionObserver" in window) {
    new IntersectionObserver(function (entries) {
      if (entries.some(function (e) { return e.isIntersecting; }) && rendered < shown.length) more();
    }, { rootMargin: "400px" }).observe(document.getElementById("more"));
  }
  window.saladReadyMs = performance.now();  /* from navigation start: what `make bench` reports */
  document.body.setAttribute("data-ready", "1");
})();
