// The scan report page: draws the summary and the cards from the JSON islands above, and sorts and
// filters the cards in place. Every value that comes from the results (file names, metadata, error
// messages) is attacker-controlled, so it is only ever set as text or as an attribute value, never
// parsed as HTML. Only the cards in view are in the page (a virtual grid), so 10,000 rows draw as
// fast as 100, and a card's thumbnail is decoded only when the card is drawn.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const VERDICTS = ["fake", "uncertain", "real"];
  // The domains a checkpoint's domain probe tells apart, as the page words them (others as named).
  const DOMAIN_NAMES = { face: "face", general: "general image" };
  const data = JSON.parse($("report-data").textContent);
  const thumbnails = JSON.parse($("report-thumbnails").textContent);
  const { cards, summary, meta } = data;
  const settings = summary.settings;
  const thresholds = settings.thresholds; // null when unknown; with domains, the rule of other rows
  const domainThresholds = settings.domain_thresholds || {}; // each domain's own rule, where it has one
  const perDomain = Boolean(thresholds) && Object.keys(domainThresholds).length > 0;
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  // The grid's cell size, from the stylesheet, so that CSS and layout agree.
  const rootStyle = getComputedStyle(document.documentElement);
  const CELL_WIDTH = parseFloat(rootStyle.getPropertyValue("--card-width")) || 248;
  const CELL_HEIGHT = parseFloat(rootStyle.getPropertyValue("--card-height")) || 340;
  const PICTURE_WIDTH = CELL_WIDTH - 12 - 7;
  const PICTURE_HEIGHT = 148;

  let shown = []; // card indices in display order
  let columns = 1;
  let cellWidth = CELL_WIDTH; // the grid's width shared out between its columns
  let drawn = new Map(); // card index -> its element, for the cards now in the grid
  let drawnKey = "";
  let pending = false;

  for (const card of cards) {
    const cut = Math.max(card.source.lastIndexOf("/"), card.source.lastIndexOf("\\"));
    card.name = card.source.slice(cut + 1) || card.source;
    card.folder = card.source.slice(0, cut + 1);
    card.searchText = card.source.toLowerCase();
    card.hasEvidence = Boolean(card.provenance && card.provenance.evidence.length);
  }

  // ---------------------------------------------------------------- building blocks

  function make(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text !== undefined && text !== null) element.textContent = String(text);
    return element;
  }

  function svgElement(tag, attributes = {}, className = "") {
    const element = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
    if (className) element.setAttribute("class", className);
    return element;
  }

  function svgTitle(element, text) {
    const title = document.createElementNS(SVG, "title");
    title.textContent = text;
    element.append(title);
    return element;
  }

  const verdictOf = (card) => card.verdict || "error";
  const domainName = (domain) => DOMAIN_NAMES[domain] || domain;
  // What the domain filter matches: the domain, "none" for a scored card without one, "error".
  const domainOf = (card) => card.domain || (card.verdict ? "none" : "error");
  const isNumber = (value) => typeof value === "number" && Number.isFinite(value);
  // A score or threshold as people read it: 3 significant digits, the rule of the package's
  // format_number (the rows keep full precision).
  const number3 = (value) => (isNumber(value) ? String(Number(value.toPrecision(3))) : "–");
  const plural = (count, word) => `${count.toLocaleString()} ${word}${count === 1 ? "" : "s"}`;

  function describeRule(rule) {
    if (!rule) return "unknown";
    if (rule.real === rule.fake) return `fake at or above ${number3(rule.fake)}`;
    return `real below ${number3(rule.real)}, uncertain between, fake at or above ${number3(rule.fake)}`;
  }

  // The domain whose own rule decided a row of ``domain``, as scoring chose it (Calibration.thresholds_for);
  // null: the rule of every other row (rows without a domain, domains without a rule of their own).
  const ruleDomain = (domain) => (perDomain && domain && Object.hasOwn(domainThresholds, domain) ? domain : null);
  const thresholdsFor = (domain) => (ruleDomain(domain) ? domainThresholds[domain] : thresholds);
  const ruleRows = (domain) => (domain ? `${domainName(domain)}s` : "other rows");

  // The rules that decided the rows, [domain or null, thresholds]: one, or each domain's own, and the
  // one of every other row when some scored row falls to it.
  function rules() {
    if (!thresholds) return [];
    if (!perDomain) return [[null, thresholds]];
    const { counts, none } = summary.domains;
    const others = none > 0 || Object.keys(counts).some((domain) => !ruleDomain(domain));
    return [...Object.entries(domainThresholds), ...(others ? [[null, thresholds]] : [])];
  }

  // What the rules say, one line each ("faces: fake at or above 0.2"); one rule as it is.
  function describeThresholds() {
    if (!perDomain) return [describeRule(thresholds)];
    return rules().map(([domain, rule]) => `${ruleRows(domain)}: ${describeRule(rule)}`);
  }

  // Whose rule decides a card of ``domain``, when each domain has its own: " (faces' threshold)".
  const whoseRule = (domain) => (perDomain ? ` (${ruleRows(ruleDomain(domain))}' threshold)` : "");

  // The rule that decided a card: the one its row names (``threshold``, ``uncertain_from``,
  // ``threshold_from``), else, for rows written before rows carried it, the run's rule of its domain.
  function cardRule(card) {
    if (!isNumber(card.threshold)) return thresholdsFor(card.domain);
    return { real: isNumber(card.uncertain_from) ? card.uncertain_from : card.threshold, fake: card.threshold };
  }
  const WHOSE = { video: " (the model's video threshold)", caller: " (this run's own threshold)" };
  function whoseCardRule(card) {
    if (!isNumber(card.threshold)) return whoseRule(card.domain);
    return WHOSE[card.threshold_from] || (card.domain && perDomain ? ` (${ruleRows(card.domain)}' threshold)` : "");
  }
  const describeCardRule = (card) => describeRule(cardRule(card)) + whoseCardRule(card);

  // A row of a facts table; ``value`` is text, or a list of texts shown one per line.
  function row(table, label, value, note) {
    const tr = make("tr");
    tr.append(make("th", "", label));
    const td = make("td");
    const lines = Array.isArray(value) ? value : [value];
    lines.forEach((line, k) => td.append(...(k ? [document.createElement("br")] : []), String(line)));
    if (note) {
      td.append(document.createElement("br"), make("span", "muted", note));
    }
    tr.append(td);
    table.append(tr);
    return tr;
  }

  // ---------------------------------------------------------------- summary

  function renderHeader() {
    document.title = meta.title;
    $("title").textContent = meta.title;
    const parts = [plural(summary.counts.total, "input")];
    if (meta.results) parts.push(`from ${meta.results}`);
    parts.push(`report built ${meta.built} by deepfake-detector ${meta.version}`);
    $("subtitle").textContent = parts.join(" · ");
    for (const note of meta.notes) $("notes").append(make("li", "", note));
  }

  function renderTiles() {
    const counts = summary.counts;
    const provenance = summary.provenance;
    const tiles = [
      ["total", "inputs", counts.total, () => resetControls()],
      ["fake", "fake", counts.fake, () => onlyVerdict("fake")],
      ["uncertain", "uncertain", counts.uncertain, () => onlyVerdict("uncertain")],
      ["real", "real", counts.real, () => onlyVerdict("real")],
      ["error", "errors", counts.error, () => onlyVerdict("error")],
      ["video", "videos", counts.video, () => setControl("filter-kind", "video")],
      ["provenance", "with provenance evidence", provenance.with_evidence, () => setControl("filter-provenance", "evidence")],
    ];
    for (const [key, label, count, action] of tiles) {
      if (key === "uncertain" && count === 0 && rules().every(([, rule]) => rule.real === rule.fake)) continue;
      const tile = make("button", `tile tile-${key}`);
      tile.type = "button";
      tile.id = `count-${key}`;
      tile.dataset.count = String(count);
      tile.title = key === "total" ? "show every input" : `show only these`;
      tile.append(make("span", "number", count.toLocaleString()), make("span", "what", label));
      tile.addEventListener("click", action);
      $("tiles").append(tile);
    }
  }

  function renderHistogram() {
    const { bins, counts } = summary.histogram;
    const svg = $("histogram");
    const [width, height, left, right, top, bottom] = [400, 150, 30, 8, 10, 22];
    const plotWidth = width - left - right;
    const plotHeight = height - top - bottom;
    const totals = Array.from({ length: bins }, (_, bin) => VERDICTS.reduce((sum, v) => sum + counts[v][bin], 0));
    const highest = Math.max(1, ...totals);
    const barWidth = plotWidth / bins;
    for (let bin = 0; bin < bins; bin++) {
      const group = svgElement("g", {}, "bar");
      let y = top + plotHeight;
      for (const verdict of ["real", "uncertain", "fake"]) {
        const barHeight = (counts[verdict][bin] / highest) * plotHeight;
        if (barHeight <= 0) continue;
        y -= barHeight;
        group.append(
          svgElement("rect", { x: left + bin * barWidth + 0.5, y, width: barWidth - 1, height: barHeight }, `hist-${verdict}`),
        );
      }
      // An invisible full-height target, so that empty and short bins can be clicked too.
      group.append(svgElement("rect", { x: left + bin * barWidth, y: top, width: barWidth, height: plotHeight, fill: "transparent" }));
      const low = bin / bins;
      const high = (bin + 1) / bins;
      const parts = VERDICTS.filter((v) => counts[v][bin]).map((v) => `${counts[v][bin]} ${v}`);
      svgTitle(group, `${low.toFixed(2)}–${high.toFixed(2)}: ${parts.join(", ") || "none"} (click to show them)`);
      group.addEventListener("click", () => setScoreRange(low, high));
      svg.append(group);
    }
    svg.append(svgElement("line", { x1: left, x2: left + plotWidth, y1: top + plotHeight, y2: top + plotHeight, stroke: "#8a94a1" }));
    for (const value of [0, 0.25, 0.5, 0.75, 1]) {
      const label = svgElement("text", { x: left + value * plotWidth, y: height - 6, "text-anchor": "middle" }, "hist-axis");
      label.textContent = String(value);
      svg.append(label);
    }
    const peak = svgElement("text", { x: left - 4, y: top + 8, "text-anchor": "end" }, "hist-axis");
    peak.textContent = String(highest);
    svg.append(peak);
    // One dashed line per threshold; with domains, each rule's fake threshold labelled with its domain.
    const xOf = (value) => left + value * plotWidth;
    rules().forEach(([domain, rule], k) => {
      for (const value of new Set([rule.real, rule.fake])) {
        const line = svgElement("line", { x1: xOf(value), x2: xOf(value), y1: top - 4, y2: top + plotHeight }, "hist-threshold");
        if (perDomain) line.dataset.domain = domain || "";
        svg.append(svgTitle(line, `${perDomain ? `${ruleRows(domain)}: ` : ""}threshold ${number3(value)}`));
      }
      if (!perDomain) return;
      const end = rule.fake > 0.8; // near the right edge, the label goes left of its line
      const x = xOf(rule.fake) + (end ? -3 : 3);
      const label = svgElement("text", { x, y: top + 8 + k * 11, "text-anchor": end ? "end" : "start" }, "hist-threshold-label");
      label.textContent = domain ? domainName(domain) : "others";
      label.dataset.domain = domain || "";
      svg.append(label);
    });
    const scored = totals.reduce((a, b) => a + b, 0);
    $("histogram-caption").textContent =
      `Fake scores of ${plural(scored, "scored input")} in ${bins} bins (red fake, amber uncertain, green real); ` +
      (thresholds ? `dashed: ${perDomain ? "each domain's thresholds" : "the threshold"} (${describeThresholds().join("; ")}).` : "threshold unknown.") +
      " Click a bar to show its inputs.";
  }

  function renderRunTable() {
    const table = $("run-table");
    for (const entry of summary.models) {
      const revision = entry.revision ? ` @ ${entry.revision}` : "";
      const share = summary.models.length > 1 ? ` (${plural(entry.rows, "row")})` : "";
      row(table, "Model", `${entry.model}${revision}${share}`);
    }
    row(table, perDomain ? "Thresholds" : "Threshold", describeThresholds(), settings.thresholds_source);
    const engine = settings.engine ? `${settings.engine}, ${settings.precision || "precision unknown"}` : "unknown";
    row(table, "Engine", engine, settings.engine ? null : "not recorded in the results; predict --report records it");
    if (settings.jpeg_draft !== null && settings.jpeg_draft !== undefined) {
      row(table, "JPEG draft", settings.jpeg_draft ? "on (large JPEGs decoded at reduced scale)" : "off");
    }
    const faces = summary.faces;
    row(
      table,
      "Faces",
      faces.face_mode ? `found and scored in ${plural(faces.face_mode, "input")}` : "not searched for (whole images)",
      faces.no_face ? `${plural(faces.no_face, "input")} without a face, scored whole` : null,
    );
    const domains = Object.entries(summary.domains.counts);
    if (domains.length) {
      const parts = domains.map(([domain, count]) => `${domainName(domain)} ${count.toLocaleString()}`);
      if (summary.domains.none) parts.push(`no domain ${summary.domains.none.toLocaleString()}`);
      row(table, "Judged as", parts.join(" · "), "the domain the model's probe chose; each has its own head");
    } else {
      row(table, "Judged as", "no domains", "the model can't tell faces from general images, or the results predate domains");
    }
    for (const entry of summary.video_settings) {
      const parts = Object.entries(entry.aggregation).map(([key, value]) => `${key} ${value}`);
      row(table, "Videos", parts.join(", "), summary.video_settings.length > 1 ? plural(entry.rows, "video") : null);
    }
  }

  function renderProvenanceTable() {
    const table = $("provenance-table");
    const p = summary.provenance;
    if (!p.checked && !p.decided_by_provenance && !p.flat) {
      row(table, "Checked", "no", "these results carry no provenance records (the run did not check C2PA, metadata or watermarks)");
      return;
    }
    if (p.flat) {
      row(table, "Checked", "not recorded", "CSV and Parquet columns keep what was found, not whether the checks ran");
    } else {
      const checks = Object.entries(p.checks).map(([check, count]) => `${check} ${count.toLocaleString()}`);
      row(table, "Checked", `${p.checked.toLocaleString()} of ${summary.counts.total.toLocaleString()} inputs`, checks.length ? `checks run: ${checks.join(" · ")}` : null);
    }
    row(
      table,
      "Declared AI-made",
      `${p.ai_declared.true.toLocaleString()} yes · ${p.ai_declared.false.toLocaleString()} no · ${p.ai_declared.unknown.toLocaleString()} unknown`,
    );
    row(table, "Decided by provenance", p.decided_by_provenance.toLocaleString());
    const checks = Object.entries(p.by_check).map(([check, count]) => `${check} ${count}`);
    row(table, "With evidence", p.with_evidence.toLocaleString(), checks.length ? checks.join(" · ") : null);
    if (p.findings.length) {
      const lines = p.findings.slice(0, 8).map(([check, name, count]) => `${check}:${name} · ${count.toLocaleString()}`);
      if (p.findings.length > 8) lines.push(`and ${p.findings.length - 8} more`);
      row(table, "Findings", lines);
    }
    const states = Object.entries(p.c2pa_states).map(([state, count]) => `${state} ${count}`);
    if (states.length) row(table, "C2PA manifests", states.join(" · "));
  }

  // ---------------------------------------------------------------- one card

  function fitStage(card, maxWidth, maxHeight) {
    const stage = make("div", "stage");
    const size = card.source_size;
    let [width, height] = size && size[0] > 0 && size[1] > 0 ? size : [4, 3];
    const scale = Math.min(maxWidth / width, maxHeight / height);
    stage.style.width = `${Math.max(1, Math.round(width * scale))}px`;
    stage.style.height = `${Math.max(1, Math.round(height * scale))}px`;
    const image = make("img");
    image.alt = `picture of ${card.name}`;
    image.decoding = "async";
    image.src = thumbnails[card.thumbnail];
    stage.append(image);
    if (size && Array.isArray(card.faces)) {
      for (const face of card.faces) {
        const box = face.box;
        if (!Array.isArray(box) || box.length !== 4) continue;
        const div = make("div", `face face-${face.verdict || "unknown"}`, number3(face.fake_score));
        div.style.left = `${(box[0] / width) * 100}%`;
        div.style.top = `${(box[1] / height) * 100}%`;
        div.style.width = `${((box[2] - box[0]) / width) * 100}%`;
        div.style.height = `${((box[3] - box[1]) / height) * 100}%`;
        div.title = `face: fake score ${number3(face.fake_score)} (${face.verdict})`;
        stage.append(div);
      }
    }
    return { stage, image };
  }

  function buildPicture(card) {
    const picture = make("div", "picture");
    if (card.thumbnail === null || card.thumbnail === undefined) {
      const why = !meta.thumbnails ? "pictures left out of this report" : card.error ? "not scored" : card.thumbnail_note || "no picture";
      picture.append(make("div", "placeholder", why));
    } else {
      const { stage, image } = fitStage(card, PICTURE_WIDTH, PICTURE_HEIGHT);
      picture.append(stage);
      if (card.heatmap !== null && card.heatmap !== undefined) {
        picture.append(heatmapToggle(card, image));
      }
    }
    if (card.kind === "video") {
      const corner = picture.querySelector(".corner") || make("div", "corner");
      const frames = card.video && isNumber(card.video.num_frames) ? ` · ${card.video.num_frames} frames` : "";
      corner.prepend(make("span", "chip chip-video", `video${frames}`));
      picture.append(corner);
    }
    return picture;
  }

  function heatmapToggle(card, image) {
    const corner = make("div", "corner");
    const button = make("button", "chip", "heatmap");
    button.type = "button";
    button.setAttribute("aria-pressed", "false");
    button.title = "show where the model sees the fake (explain's overlay)";
    button.addEventListener("click", (event) => {
      event.stopPropagation();
      const on = button.getAttribute("aria-pressed") !== "true";
      button.setAttribute("aria-pressed", String(on));
      image.src = thumbnails[on ? card.heatmap : card.thumbnail];
      for (const face of image.parentElement.querySelectorAll(".face")) face.hidden = on;
    });
    corner.append(button);
    return corner;
  }

  function scoreBar(card) {
    const bar = make("div", "bar");
    const fill = make("div", `fill ${verdictOf(card)}`);
    fill.style.width = isNumber(card.fake_score) ? `${(card.fake_score * 100).toFixed(1)}%` : "0";
    bar.append(fill);
    const rule = cardRule(card);
    if (rule) {
      for (const value of new Set([rule.real, rule.fake])) {
        const marker = make("div", "marker");
        marker.style.left = `calc(${value * 100}% - 1px)`;
        marker.title = `threshold ${number3(value)}`;
        bar.append(marker);
      }
    }
    bar.title = `fake score ${number3(card.fake_score)}; ${describeCardRule(card)}`;
    return bar;
  }

  function timeline(card, className, width, height, points) {
    const frames = (card.video && card.video.timeline) || [];
    const usable = frames.filter(([t, s]) => isNumber(t) && isNumber(s));
    if (!usable.length) return null;
    const end = Math.max(...usable.map(([t]) => t), 1e-6);
    const svg = svgElement("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: points ? "xMidYMid meet" : "none", role: "img" }, className);
    const [left, right, top, bottom] = points ? [16, 8, 6, 14] : [4, 4, 4, 4]; // room for the axis labels
    const x = (t) => (usable.length === 1 ? (left + width - right) / 2 : left + (t / end) * (width - left - right));
    const y = (s) => height - bottom - s * (height - top - bottom);
    const rule = cardRule(card); // the clip's; each frame is coloured by its own domain's image rule
    if (rule) {
      svg.append(svgElement("line", { x1: 0, x2: width, y1: y(rule.fake), y2: y(rule.fake) }, "spark-threshold"));
    }
    svg.append(svgElement("polyline", { points: usable.map(([t, s]) => `${x(t).toFixed(1)},${y(s).toFixed(1)}`).join(" ") }, "spark-line"));
    if (points) {
      const label = (text, attributes) => {
        const element = svgElement("text", attributes, "hist-axis");
        element.textContent = text;
        svg.append(element);
      };
      label("1", { x: 2, y: y(1) + 4 });
      label("0", { x: 2, y: y(0) });
      label("0 s", { x: left, y: height - 2, "text-anchor": "start" });
      label(`${end.toFixed(1)} s`, { x: width - right, y: height - 2, "text-anchor": "end" });
      for (const [t, s, domain] of usable) {
        const frameRule = thresholdsFor(domain || card.domain);
        const verdict = frameRule ? (s >= frameRule.fake ? "fake" : s < frameRule.real ? "real" : "uncertain") : "unknown";
        const dot = svgElement("circle", { cx: x(t), cy: y(s), r: 3.5 }, `spark-point hist-${verdict}`);
        svg.append(svgTitle(dot, `${t.toFixed(2)} s: fake score ${number3(s)}${domain ? `, judged as ${domainName(domain)}` : ""}`));
      }
    }
    svg.setAttribute("aria-label", `fake score of ${usable.length} frames over ${end.toFixed(1)} s`);
    return svg;
  }

  function provenanceChips(card) {
    const chips = make("div", "chips");
    const record = card.provenance;
    if (card.decided_by === "provenance") chips.append(make("span", "chip chip-ai", "decided by provenance"));
    if (record && record.ai_declared === true) chips.append(make("span", "chip chip-ai", "declared AI-made"));
    if (record && record.c2pa && record.c2pa.state) chips.append(make("span", "chip", `C2PA ${record.c2pa.state}`));
    if (record) for (const item of record.evidence) chips.append(make("span", "chip", `${item.check}:${item.name}`));
    return chips.childElementCount ? chips : null;
  }

  function buildCard(card) {
    const verdict = verdictOf(card);
    const article = make("article", `card verdict-${verdict}`);
    article.setAttribute("role", "listitem");
    article.dataset.index = String(card.index);
    article.dataset.verdict = verdict;
    article.dataset.kind = card.kind;
    article.dataset.domain = domainOf(card);
    article.append(buildPicture(card));
    const body = make("div", "body");
    const name = make("div", "name", card.name);
    name.title = card.source;
    body.append(name);
    if (card.folder) {
      const folder = card.folder.length > 44 ? `…${card.folder.slice(-43)}` : card.folder;
      body.append(make("div", "folder", folder));
    }
    const line = make("div", "verdict-line");
    line.append(make("span", `verdict ${verdict}`, verdict.toUpperCase()));
    if (isNumber(card.fake_score)) line.append(make("span", "score", number3(card.fake_score)));
    if (card.domain) {
      const chip = make("span", "chip chip-domain", domainName(card.domain));
      chip.title = `judged as ${domainName(card.domain)}${card.detector ? ` by the ${card.detector}` : ""}`;
      line.append(chip);
    }
    if (card.no_face === true) line.append(make("span", "chip", "no face"));
    body.append(line);
    if (verdict !== "error") body.append(scoreBar(card));
    if (card.kind === "video") {
      const spark = timeline(card, "spark", 200, 34, false);
      if (spark) body.append(spark);
    }
    const chips = provenanceChips(card);
    if (chips) body.append(chips);
    if (card.hasEvidence) {
      const first = card.provenance.evidence[0];
      body.append(make("div", "evidence", `${first.name}: ${first.detail}`));
    }
    if (card.error) body.append(make("div", "error-text", card.error));
    if (card.video && card.video.decode_problem) body.append(make("div", "error-text", card.video.decode_problem));
    const more = make("button", "more", "details");
    more.type = "button";
    more.addEventListener("click", () => openDetails(card));
    body.append(more);
    article.append(body);
    return article;
  }

  // ---------------------------------------------------------------- details

  function openDetails(card) {
    const body = $("details-body");
    body.replaceChildren();
    $("details-title").textContent = card.source;
    const pictures = make("div", "detail-pictures");
    if (card.thumbnail !== null && card.thumbnail !== undefined) {
      const figure = make("figure");
      figure.append(fitStage(card, 420, 320).stage);
      const what = card.kind === "video" ? "the first frame scored" : "the input";
      figure.append(make("figcaption", "", `${what}${Array.isArray(card.faces) && card.faces.length ? "; boxes: faces and their fake scores" : ""}`));
      pictures.append(figure);
    } else {
      pictures.append(make("p", "muted", card.thumbnail_note || "no picture"));
    }
    if (card.heatmap !== null && card.heatmap !== undefined) {
      const figure = make("figure");
      const stage = fitStage({ ...card, faces: null, thumbnail: card.heatmap }, 420, 320).stage;
      figure.append(stage, make("figcaption", "", "heatmap: red is where the model sees the fake"));
      pictures.append(figure);
    } else if (card.heatmap_note) {
      pictures.append(make("p", "muted", `heatmap: ${card.heatmap_note}`));
    }
    body.append(pictures);

    const facts = make("table", "facts");
    row(facts, "Verdict", verdictOf(card).toUpperCase());
    row(facts, "Fake score", number3(card.fake_score), `threshold: ${describeCardRule(card)}`);
    if (card.decided_by) row(facts, "Decided by", card.decided_by);
    if (card.domain) {
      row(facts, "Judged as", domainName(card.domain), card.detector ? `scored by the ${card.detector}` : null);
    } else if (card.verdict) {
      row(facts, "Judged as", "no domain", "the model can't tell faces from general images, or the results predate domains");
    }
    row(facts, "Model", card.model + (card.revision ? ` @ ${card.revision}` : ""));
    if (Array.isArray(card.faces)) {
      const listed = card.faces.map((face, k) => `face ${k + 1}: fake score ${number3(face.fake_score)} (${face.verdict}), box ${JSON.stringify(face.box)}`);
      row(facts, "Faces", card.faces.length ? listed.join("; ") : "none found: scored whole");
    }
    if (card.error) row(facts, "Error", card.error);
    body.append(facts);
    if (card.file && card.file.startsWith("file:")) {
      const link = make("a", "open", "open the file");
      link.href = card.file;
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      body.append(link);
    }

    if (card.video) {
      body.append(make("h3", "", "Video"));
      const video = card.video;
      const table = make("table", "facts");
      if (isNumber(video.duration_s)) row(table, "Duration", `${video.duration_s.toFixed(2)} s`);
      row(table, "Frames scored", String(video.num_frames), isNumber(video.no_face_frames) ? `${video.no_face_frames} without a face` : null);
      if (video.aggregation) row(table, "Aggregation", Object.entries(video.aggregation).map(([k, v]) => `${k} ${v}`).join(", "));
      if (isNumber(video.stopped_at_s)) row(table, "Decoding stopped at", `${video.stopped_at_s.toFixed(2)} s`);
      if (video.decode_problem) row(table, "Decoding problem", video.decode_problem);
      body.append(table);
      const chart = timeline(card, "detail-timeline", 600, 140, true);
      const rule = cardRule(card);
      const dashed = rule ? `; dashed: fake threshold ${number3(rule.fake)}${whoseCardRule(card)}` : "";
      if (chart) body.append(chart, make("p", "muted", `fake score per frame over time${dashed}; hover a point for its time and score`));
    }

    const record = card.provenance;
    body.append(make("h3", "", "Provenance"));
    if (!record) {
      body.append(make("p", "muted", "not checked for this input"));
    } else {
      const table = make("table", "facts");
      if (record.checks.length) row(table, "Checks run", record.checks.join(", "));
      row(table, "Declared AI-made", record.ai_declared === null || record.ai_declared === undefined ? "unknown" : record.ai_declared ? "yes" : "no");
      if (record.c2pa) {
        const c2pa = record.c2pa;
        row(table, "C2PA manifest", c2pa.state || "–");
        if (c2pa.claim_generator) row(table, "Claim generator", c2pa.claim_generator);
        if (c2pa.digital_source_type) row(table, "Digital source type", c2pa.digital_source_type);
        row(table, "C2PA says AI-made", c2pa.ai_generated ? "yes" : "no");
        if (c2pa.problems && c2pa.problems.length) row(table, "C2PA problems", c2pa.problems.join("; "));
      }
      body.append(table);
      if (!record.evidence.length) body.append(make("p", "muted", "no evidence found"));
      for (const item of record.evidence) {
        body.append(make("h4", "", `${item.check} · ${item.name}`), make("pre", "detail", item.detail));
      }
    }
    $("details").showModal();
  }

  // ---------------------------------------------------------------- filters and sorting

  function readState() {
    const verdicts = new Set();
    for (const input of document.querySelectorAll("#controls input[data-verdict]")) {
      if (input.checked) verdicts.add(input.dataset.verdict);
    }
    const bound = (id, fallback) => {
      const value = parseFloat($(id).value);
      return Number.isFinite(value) ? Math.min(1, Math.max(0, value)) : fallback;
    };
    return {
      verdicts,
      min: bound("score-min", 0),
      max: bound("score-max", 1),
      provenance: $("filter-provenance").value,
      errorsOnly: $("errors-only").checked,
      kind: $("filter-kind").value,
      domain: $("filter-domain").value,
      search: $("search").value.trim().toLowerCase(),
      sort: $("sort").value,
    };
  }

  function matches(card, state) {
    const verdict = verdictOf(card);
    if (state.errorsOnly && verdict !== "error") return false;
    if (!state.verdicts.has(verdict)) return false;
    if (state.kind !== "any" && card.kind !== state.kind) return false;
    if (state.domain !== "any" && domainOf(card) !== state.domain) return false;
    if (state.min > 0 || state.max < 1) {
      if (!isNumber(card.fake_score) || card.fake_score < state.min || card.fake_score > state.max) return false;
    }
    if (state.provenance === "evidence" && !card.hasEvidence) return false;
    if (state.provenance === "none" && card.hasEvidence) return false;
    if (state.provenance === "ai-declared" && !(card.provenance && card.provenance.ai_declared === true)) return false;
    if (state.provenance === "decided" && card.decided_by !== "provenance") return false;
    if (state.search && !card.searchText.includes(state.search)) return false;
    return true;
  }

  const byScore = (direction) => (a, b) => {
    const sa = isNumber(a.fake_score) ? a.fake_score : null;
    const sb = isNumber(b.fake_score) ? b.fake_score : null;
    if (sa === null || sb === null) return sa === sb ? a.index - b.index : sa === null ? 1 : -1;
    return direction * (sa - sb) || a.index - b.index;
  };
  const SORTS = {
    "score-desc": byScore(-1),
    "score-asc": byScore(1),
    name: (a, b) => collator.compare(a.name, b.name) || a.index - b.index,
    input: (a, b) => a.index - b.index,
    errors: (a, b) => (b.verdict === null) - (a.verdict === null) || byScore(-1)(a, b),
  };

  function applyFilters() {
    const state = readState();
    const matching = cards.filter((card) => matches(card, state));
    matching.sort(SORTS[state.sort] || SORTS["score-desc"]);
    shown = matching.map((card) => card.index);
    const count = $("shown-count");
    count.textContent = `Showing ${shown.length.toLocaleString()} of ${cards.length.toLocaleString()}`;
    count.dataset.shown = String(shown.length);
    $("empty").hidden = shown.length > 0;
    layout();
    for (const element of drawn.values()) element.remove();
    drawn = new Map();
    draw(true);
  }

  function setControl(id, value) {
    $(id).value = value;
    applyFilters();
  }

  function onlyVerdict(verdict) {
    for (const input of document.querySelectorAll("#controls input[data-verdict]")) {
      input.checked = input.dataset.verdict === verdict;
    }
    $("errors-only").checked = false;
    applyFilters();
  }

  function setScoreRange(low, high) {
    $("score-min").value = low.toFixed(2);
    $("score-max").value = high.toFixed(2);
    applyFilters();
  }

  function resetControls() {
    for (const input of document.querySelectorAll("#controls input[data-verdict]")) input.checked = true;
    $("errors-only").checked = false;
    $("score-min").value = "0";
    $("score-max").value = "1";
    $("filter-provenance").value = "any";
    $("filter-kind").value = "any";
    $("filter-domain").value = "any";
    $("search").value = "";
    applyFilters();
  }

  // One option per domain the rows have, with its count; hidden when no row has one.
  function renderDomainFilter() {
    const select = $("filter-domain");
    const domains = Object.entries(summary.domains.counts);
    for (const [domain, count] of domains) {
      const option = make("option", "", `${domainName(domain)} (${count.toLocaleString()})`);
      option.value = domain;
      select.append(option);
    }
    if (summary.domains.none) {
      const option = make("option", "", `no domain (${summary.domains.none.toLocaleString()})`);
      option.value = "none";
      select.append(option);
    }
    $("domain-filter").hidden = domains.length === 0;
  }

  // ---------------------------------------------------------------- the virtual grid

  function layout() {
    const grid = $("grid");
    columns = Math.max(1, Math.floor(grid.clientWidth / CELL_WIDTH));
    cellWidth = Math.min(grid.clientWidth / columns, CELL_WIDTH * 1.25);
    grid.style.height = `${Math.ceil(shown.length / columns) * CELL_HEIGHT}px`;
  }

  function draw(force) {
    const grid = $("grid");
    const top = grid.getBoundingClientRect().top;
    const firstRow = Math.max(0, Math.floor(-top / CELL_HEIGHT) - 1);
    const lastRow = Math.max(0, Math.ceil((window.innerHeight - top) / CELL_HEIGHT) + 1);
    const start = Math.min(shown.length, firstRow * columns);
    const end = Math.min(shown.length, lastRow * columns);
    const key = `${start}:${end}:${columns}:${cellWidth}`;
    if (!force && key === drawnKey) return;
    drawnKey = key;
    const keep = new Map();
    const added = document.createDocumentFragment();
    for (let position = start; position < end; position++) {
      const index = shown[position];
      const element = drawn.get(index) || buildCard(cards[index]);
      element.style.left = `${(position % columns) * cellWidth}px`;
      element.style.width = `${cellWidth - 12}px`;
      element.style.top = `${Math.floor(position / columns) * CELL_HEIGHT}px`;
      if (!element.isConnected) added.append(element);
      keep.set(index, element);
    }
    for (const [index, element] of drawn) if (!keep.has(index)) element.remove();
    grid.append(added);
    drawn = keep;
  }

  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      draw(false);
    });
  }

  // ---------------------------------------------------------------- start

  function setUp() {
    renderHeader();
    renderTiles();
    renderHistogram();
    renderRunTable();
    renderProvenanceTable();
    renderDomainFilter();
    for (const id of ["filter-fake", "filter-uncertain", "filter-real", "filter-error", "errors-only", "filter-provenance", "filter-kind", "filter-domain", "sort"]) {
      $(id).addEventListener("change", applyFilters);
    }
    for (const id of ["score-min", "score-max", "search"]) $(id).addEventListener("input", applyFilters);
    $("reset").addEventListener("click", resetControls);
    $("details-close").addEventListener("click", () => $("details").close());
    window.addEventListener("scroll", schedule, { passive: true });
    window.addEventListener("resize", () => {
      layout();
      draw(true);
    });
    applyFilters();
    document.documentElement.dataset.ready = "true";
    document.documentElement.dataset.readyMs = String(Math.round(performance.now()));
  }

  setUp();
})();
