// The niels-gpt inspector: a chat whose every token can be opened to see what
// the model was thinking. Plain JavaScript, no framework, no build step; it
// talks only to the server that served it (docs/API.md).
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const enc = new TextEncoder();

  const state = {
    model: null,        // {vocab, context, layers, heads, generation} from /ui/model
    history: [],        // the conversation as sent: [{role, content}]
    turns: [],          // every streamed reply, chat and ablation runs alike
    lastChat: null,     // the newest chat turn: what "re-run" repeats
    selected: null,     // {turn, step}
    abort: null,        // AbortController of the request in flight
    ablated: new Set(), // "layer.head" keys switched off
    matrix: null,       // the last /inspect/attention answer for one layer
    retryTimer: 0,
  };

  // ---- bytes and text --------------------------------------------------

  // tokenDisplay mirrors the server's token_display for a byte.
  function tokenDisplay(b) {
    return b >= 32 && b <= 126 ? String.fromCharCode(b) : '\\x' + b.toString(16).padStart(2, '0');
  }

  // A generation-2 model's end-of-turn piece: its reply ends there (docs/API.md §18).
  const END_OF_TURN = 6;

  function gen2() {
    return !!state.model && state.model.generation === 2;
  }

  // byteOf is the byte a token_display of the form \xNN stands for (a byte,
  // or a generation-2 byte piece), or -1.
  function byteOf(display) {
    return /^\\x[0-9a-f]{2}$/.test(display) ? parseInt(display.slice(2), 16) : -1;
  }

  // stepsText is the text of streamed tokens, for a reply stopped before
  // `done` brought the server's own. Generation 1's ids are bytes. A
  // generation-2 piece spells its display (U+2581 shown as a space) unless
  // it is a byte piece, or decodes to something else alone (a control piece
  // to nothing, <unk> to its surface); the reply ends at end-of-turn.
  function stepsText(steps) {
    const bytes = [];
    for (const {token} of steps) {
      if (!gen2()) {
        bytes.push(token.token_id);
        continue;
      }
      if (token.token_id === END_OF_TURN) break;
      const d = token.token_display;
      const t = token.token_text;
      const b = byteOf(d);
      if (b >= 0) bytes.push(b);
      else bytes.push(...enc.encode(d === t || d === ' ' + t ? d : t));
    }
    const b = new Uint8Array(bytes);
    return (gen2() ? decodePieceBytes(b) : new TextDecoder().decode(b)).trim();
  }

  // decodePieceBytes decodes UTF-8 as SentencePiece decodes byte pieces:
  // each byte that starts no valid sequence becomes one U+FFFD (a
  // TextDecoder would make one of a cut sequence's bytes together).
  function decodePieceBytes(b) {
    const dec = new TextDecoder();
    let out = '';
    let from = 0; // start of the valid run not yet decoded
    const cont = (k, lo = 0x80, hi = 0xbf) => k < b.length && b[k] >= lo && b[k] <= hi;
    let i = 0;
    while (i < b.length) {
      const c = b[i];
      let n = 0;
      if (c < 0x80) n = 1;
      else if (c >= 0xc2 && c <= 0xdf) n = cont(i + 1) ? 2 : 0;
      else if (c >= 0xe0 && c <= 0xef) {
        const lo = c === 0xe0 ? 0xa0 : 0x80;
        const hi = c === 0xed ? 0x9f : 0xbf;
        n = cont(i + 1, lo, hi) && cont(i + 2) ? 3 : 0;
      } else if (c >= 0xf0 && c <= 0xf4) {
        const lo = c === 0xf0 ? 0x90 : 0x80;
        const hi = c === 0xf4 ? 0x8f : 0xbf;
        n = cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3) ? 4 : 0;
      }
      if (n) {
        i += n;
        continue;
      }
      out += dec.decode(b.subarray(from, i)) + '\ufffd';
      from = ++i;
    }
    return out + dec.decode(b.subarray(from));
  }

  // transcript formats messages as the server does before generating (the
  // chat transcript of docs/API.md); withPrompt appends "assistant: ".
  function transcript(messages, withPrompt) {
    let s = '';
    messages.forEach((m, i) => {
      if (withPrompt && i === messages.length - 1 && m.role === 'assistant' && m.content === '') {
        s += 'assistant: ';
        withPrompt = false;
        return;
      }
      s += m.role + ': ' + m.content + '\n';
    });
    return withPrompt ? s + 'assistant: ' : s;
  }

  // ---- errors ----------------------------------------------------------

  function showError(text, retryAfter) {
    const box = $('error');
    clearInterval(state.retryTimer);
    box.hidden = false;
    box.textContent = text;
    if (retryAfter > 0) {
      let left = retryAfter;
      const tick = () => {
        box.textContent = text + (left > 0 ? ` (retry in ${left} s)` : ' (you can retry now)');
        if (left-- <= 0) clearInterval(state.retryTimer);
      };
      tick();
      state.retryTimer = setInterval(tick, 1000);
    }
  }

  function clearError() {
    clearInterval(state.retryTimer);
    $('error').hidden = true;
    $('error').textContent = '';
  }

  // apiError turns a refused request into the server's own words: `detail`
  // for a 422, `error` otherwise, with Retry-After counted down.
  async function apiError(resp) {
    let body = null;
    try { body = await resp.json(); } catch (_) { /* not JSON: the status says enough */ }
    let msg = resp.statusText || 'request failed';
    if (body && body.detail !== undefined) {
      msg = typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail);
    } else if (body && body.error !== undefined) {
      msg = typeof body.error === 'string' ? body.error : (body.error.message || JSON.stringify(body.error));
    }
    const retry = parseInt(resp.headers.get('Retry-After') || '', 10);
    showError(`${resp.status}: ${msg}`, Number.isFinite(retry) ? retry : 0);
  }

  async function postJSON(path, body, signal) {
    return fetch(path, {
      method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify(body), signal,
    });
  }

  // ---- settings --------------------------------------------------------

  // numberField reads an input: undefined when empty (the server's default
  // applies), the number otherwise, or the raw text so that the server's
  // 422 names what is wrong with it.
  function numberField(id) {
    const v = $(id).value.trim();
    if (v === '') return undefined;
    const n = Number(v);
    return Number.isFinite(n) ? n : v;
  }

  function chatBody(messages) {
    const body = {messages, trace_layer: Number($('trace-layer').value || 0)};
    const fields = {temperature: 'temperature', seed: 'seed', max_new_tokens: 'max-tokens', window_hop: 'window-hop'};
    for (const [name, id] of Object.entries(fields)) {
      const v = numberField(id);
      if (v !== undefined) body[name] = v;
    }
    const topK = numberField('top-k');
    body.top_k = topK === undefined ? null : topK; // empty means no filtering
    if ($('all-layers').checked) body.trace_layers = 'all';
    if ($('logit-lens').checked) body.logit_lens = true;
    return body;
  }

  function ablateList() {
    return [...state.ablated].map((k) => {
      const [layer, head] = k.split('.').map(Number);
      return {layer, head};
    });
  }

  // ---- streaming -------------------------------------------------------

  // sseEvents yields the events of a text/event-stream body as they arrive.
  async function* sseEvents(resp) {
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let event = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (data.length) yield {event, data: JSON.parse(data.join('\n'))};
      }
    }
  }

  // TokenView draws a reply's token boxes. Steps arrive faster than frames,
  // so boxes are queued and added once per animation frame, all of them:
  // none is ever dropped, however many arrive within one frame.
  class TokenView {
    constructor(el, turn, onFrame) {
      this.el = el;
      this.turn = turn;
      this.onFrame = onFrame;
      this.pending = [];
      this.frame = 0;
      el.dataset.turn = String(turn.index);
    }
    push(step) {
      this.pending.push(step);
      if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
    }
    flush() {
      if (this.frame) cancelAnimationFrame(this.frame);
      this.frame = 0;
      if (this.pending.length) {
        const frag = document.createDocumentFragment();
        for (const s of this.pending) frag.appendChild(tokenBox(s));
        this.pending.length = 0;
        this.el.appendChild(frag);
      }
      if (this.onFrame) this.onFrame();
    }
  }

  function tokenBox(step) {
    const box = document.createElement('span');
    const d = step.token.token_display;
    box.className = byteOf(d) >= 0 ? 'tok np' : 'tok';
    box.textContent = d;
    box.dataset.step = String(step.token.step);
    box.title = `step ${step.token.step}, id ${step.token.token_id}`;
    return box;
  }

  function newTurn(messages, body, kind) {
    const turn = {
      index: state.turns.length, kind, messages, body,
      promptBytes: enc.encode(transcript(messages, true)),
      steps: [], reply: null, stopped: false,
      picked: false, // the user chose a step: stop following the newest
    };
    state.turns.push(turn);
    return turn;
  }

  // runTurn streams one reply into view. It resolves to true when the
  // stream ended with `done`, false when it was refused, stopped or broken
  // (the reason is on screen).
  async function runTurn(turn, view) {
    const ctrl = new AbortController();
    state.abort = ctrl;
    setBusy(true);
    let pendingToken = null;
    try {
      const resp = await postJSON('/chat/stream', turn.body, ctrl.signal);
      if (!resp.ok) {
        await apiError(resp);
        return false;
      }
      for await (const ev of sseEvents(resp)) {
        if (ev.event === 'token') {
          pendingToken = ev.data;
        } else if (ev.event === 'trace') {
          const step = {token: pendingToken, trace: ev.data};
          pendingToken = null;
          turn.steps.push(step);
          view.push(step);
        } else if (ev.event === 'done') {
          turn.reply = ev.data.reply;
        } else if (ev.event === 'error') {
          showError(`stream ended: ${ev.data.error}`, 0);
        }
      }
      if (turn.reply === null && !$('error').textContent) showError('the stream ended without `done`', 0);
      return turn.reply !== null;
    } catch (err) {
      if (err.name === 'AbortError') {
        turn.stopped = true;
        return false;
      }
      showError(`connection failed: ${err.message}`, 0);
      return false;
    } finally {
      view.flush();
      state.abort = null;
      setBusy(false);
    }
  }

  function setBusy(busy) {
    $('send').disabled = busy;
    $('stop').disabled = !busy;
    $('rerun').disabled = busy || !state.lastChat;
    $('new-chat').disabled = busy;
  }

  // ---- chat ------------------------------------------------------------

  function addMessage(role, text) {
    const msg = document.createElement('div');
    msg.className = 'msg ' + role;
    const r = document.createElement('div');
    r.className = 'role';
    r.textContent = role;
    msg.appendChild(r);
    if (text !== undefined) {
      const t = document.createElement('div');
      t.className = 'text';
      t.textContent = text;
      msg.appendChild(t);
    }
    $('transcript').appendChild(msg);
    return msg;
  }

  async function send(text) {
    clearError();
    state.history.push({role: 'user', content: text});
    const userMsg = addMessage('user', text);
    const msg = addMessage('assistant');
    const replyEl = document.createElement('div');
    replyEl.className = 'reply';
    replyEl.tabIndex = 0;
    replyEl.setAttribute('aria-label', 'reply tokens; arrow keys select');
    msg.appendChild(replyEl);

    const turn = newTurn(state.history.slice(), chatBody(state.history.slice()), 'chat');
    // The token view follows the newest step until the user picks one.
    const view = new TokenView(replyEl, turn, () => {
      if (!turn.picked && turn.steps.length) select(turn, turn.steps.length - 1, false);
      const t = $('transcript');
      t.scrollTop = t.scrollHeight;
    });
    const ok = await runTurn(turn, view);
    if (ok || turn.stopped) {
      const content = ok ? turn.reply : stepsText(turn.steps);
      state.history.push({role: 'assistant', content});
      const t = document.createElement('div');
      t.className = 'reply-text';
      t.textContent = (ok ? 'reply: ' : 'stopped: ') + JSON.stringify(content);
      msg.appendChild(t);
      state.lastChat = turn;
      $('rerun').disabled = false;
    } else {
      // Refused or broken: the message was not answered, so it leaves the
      // history and goes back to the box to be sent again.
      state.history.pop();
      userMsg.remove();
      msg.remove();
      $('prompt').value = text;
    }
  }

  // ---- the token view ---------------------------------------------------

  function turnOf(el) {
    const host = el.closest('[data-turn]');
    return host ? state.turns[Number(host.dataset.turn)] : null;
  }

  function select(turn, i, focus) {
    if (i < 0 || i >= turn.steps.length) return;
    document.querySelectorAll('.tok.sel').forEach((b) => b.classList.remove('sel'));
    state.selected = {turn, step: i};
    document.querySelectorAll(`[data-turn="${turn.index}"] .tok[data-step="${i}"]`).forEach((b) => {
      b.classList.add('sel');
      if (focus) b.scrollIntoView({block: 'nearest'});
    });
    renderToken(turn, i);
  }

  // keyLabels names the t keys the model read when it produced step i: the
  // last t tokens of the prompt and the steps before. The steps name
  // themselves; a generation-1 prompt is its transcript's bytes, while a
  // generation-2 prompt's pieces are the server's to know, so they go
  // unnamed.
  function keyLabels(turn, i, t) {
    const labels = [];
    const fromPrompt = t - Math.min(i, t); // keys before the first step in the window
    const bytes = turn.promptBytes;
    for (let j = 0; j < t; j++) {
      if (j >= fromPrompt) labels.push(turn.steps[i - t + j].token.token_display);
      else if (gen2()) labels.push(null);
      else labels.push(tokenDisplay(bytes[bytes.length - fromPrompt + j]));
    }
    return labels;
  }

  function renderToken(turn, i) {
    const {token, trace} = turn.steps[i];
    $('token-none').hidden = true;
    $('token-detail').hidden = false;
    $('token-title').textContent = `step ${i}: ${JSON.stringify(token.token_display)} (id ${token.token_id})` +
      (turn.kind === 'ablated' ? ', ablated run' : '');
    $('entropy').textContent = trace.entropy.toFixed(4);

    const body = $('candidates').tBodies[0];
    body.replaceChildren(...trace.topk.map((c) => {
      const tr = document.createElement('tr');
      tr.append(cell(c.token_display, 'mono'), cell(String(c.token_id), 'num'), cell(c.prob.toFixed(4), 'num'));
      const bar = document.createElement('span');
      bar.className = 'bar';
      bar.style.width = (c.prob * 100).toFixed(1) + '%';
      const td = cell('', 'barcell');
      td.appendChild(bar);
      tr.appendChild(td);
      return tr;
    }));

    const layers = trace.layers || [{layer: turn.body.trace_layer, attn: trace.attn}];
    const t = trace.attn[0].length;
    const labels = keyLabels(turn, i, t);
    const grid = $('attn-grid');
    grid.replaceChildren();
    const cw = Math.max(1, Math.min(8, Math.floor(560 / t)));
    for (const {layer, attn} of layers) {
      attn.forEach((row, head) => {
        const lbl = document.createElement('span');
        lbl.className = 'lbl';
        lbl.textContent = `L${layer} H${head}`;
        const c = document.createElement('canvas');
        c.width = row.length * cw;
        c.height = 14;
        c.dataset.layer = String(layer);
        c.dataset.head = String(head);
        c.dataset.cell = String(cw);
        c.setAttribute('role', 'img');
        c.setAttribute('aria-label', `layer ${layer} head ${head} attention over ${row.length} positions`);
        const g = c.getContext('2d');
        row.forEach((p, j) => {
          g.fillStyle = heat(p);
          g.fillRect(j * cw, 0, cw, c.height);
        });
        c.addEventListener('mousemove', (e) => {
          const j = Math.min(row.length - 1, Math.floor(e.offsetX / cw));
          const what = labels[j] === null ? '(prompt)' : JSON.stringify(labels[j]);
          $('attn-readout').textContent = `layer ${layer} head ${head} · key ${j} ${what} · ${row[j].toFixed(4)}`;
        });
        grid.append(lbl, c);
      });
    }

    $('lens-section').hidden = !trace.lens;
    if (trace.lens) {
      $('lens').tBodies[0].replaceChildren(...trace.lens.map((l) => {
        const tr = document.createElement('tr');
        const cands = l.topk.map((c) => `${c.token_display} ${c.prob.toFixed(3)}`).join('   ');
        tr.append(cell(String(l.layer), 'num'), cell(l.entropy.toFixed(3), 'num'), cell(cands, 'mono'));
        return tr;
      }));
    }
  }

  function cell(text, cls) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  // heat maps a probability to a colour, white at 0 to dark blue at 1. The
  // red channel is 255 − round(225·p), so the value can be read back off
  // the canvas.
  function heat(p) {
    const v = Math.min(1, Math.max(0, p));
    return `rgb(${255 - Math.round(225 * v)},${255 - Math.round(160 * v)},${255 - Math.round(64 * v)})`;
  }

  // ---- ablation -----------------------------------------------------------

  function buildHeadGrid() {
    const grid = $('head-grid');
    grid.replaceChildren();
    grid.style.gridTemplateColumns = `repeat(${state.model.heads}, auto)`;
    for (let l = 0; l < state.model.layers; l++) {
      for (let h = 0; h < state.model.heads; h++) {
        const b = document.createElement('button');
        b.type = 'button';
        b.textContent = `L${l} H${h}`;
        b.setAttribute('aria-label', `layer ${l} head ${h}`);
        b.setAttribute('aria-pressed', 'false');
        b.dataset.key = `${l}.${h}`;
        b.addEventListener('click', () => {
          const off = b.getAttribute('aria-pressed') !== 'true';
          b.setAttribute('aria-pressed', String(off));
          if (off) state.ablated.add(b.dataset.key); else state.ablated.delete(b.dataset.key);
        });
        grid.appendChild(b);
      }
    }
  }

  function staticReply(el, turn) {
    el.replaceChildren(...turn.steps.map(tokenBox));
    el.dataset.turn = String(turn.index);
  }

  // rerun repeats the newest chat turn (same messages, settings and seed)
  // with the chosen heads switched off, beside the original.
  async function rerun() {
    const base = state.lastChat;
    if (!base) return;
    clearError();
    const ablate = ablateList();
    const turn = newTurn(base.messages, Object.assign({}, base.body, {ablate}), 'ablated');
    staticReply($('reply-a'), base);
    $('reply-b').replaceChildren();
    $('reply-b-title').textContent = ablate.length
      ? 'Ablated: ' + ablate.map((a) => `L${a.layer} H${a.head}`).join(', ') : 'Ablated: none';
    $('ablate-summary').textContent = '';
    const boxesA = $('reply-a').children;
    const view = new TokenView($('reply-b'), turn, () => {
      const boxesB = $('reply-b').children;
      for (let k = 0; k < boxesB.length; k++) markChanged(base, turn, k, boxesA[k], boxesB[k]);
    });
    const ok = await runTurn(turn, view);
    const n = Math.max(base.steps.length, turn.steps.length);
    let changed = 0;
    let first = -1;
    for (let k = 0; k < n; k++) {
      const diff = markChanged(base, turn, k, boxesA[k], $('reply-b').children[k]);
      if (diff) {
        changed++;
        if (first < 0) first = k;
      }
    }
    $('ablate-summary').textContent = (ok ? '' : 'incomplete: ') + (changed === 0
      ? 'the two replies are the same'
      : `${changed} of ${n} tokens differ, the first at step ${first}`);
  }

  function markChanged(a, b, k, boxA, boxB) {
    const ta = a.steps[k];
    const tb = b.steps[k];
    const diff = !ta || !tb || ta.token.token_id !== tb.token.token_id;
    if (boxA) boxA.classList.toggle('changed', diff);
    if (boxB) boxB.classList.toggle('changed', diff);
    return diff;
  }

  // ---- the full matrix ----------------------------------------------------

  function conversation() {
    return state.history.slice();
  }

  function attentionBody(layers) {
    const body = {messages: conversation(), layers};
    const seed = numberField('seed');
    if (seed !== undefined) body.seed = seed;
    if (state.ablated.size) body.ablate = ablateList();
    return body;
  }

  async function loadMatrix() {
    if (!state.history.length) {
      showError('chat first: the matrix is over the conversation', 0);
      return;
    }
    clearError();
    const layer = Number($('matrix-layer').value);
    const resp = await postJSON('/inspect/attention', attentionBody([layer]));
    if (!resp.ok) {
      await apiError(resp);
      return;
    }
    const data = await resp.json();
    state.matrix = {layer, data};
    drawMatrix();
  }

  function drawMatrix() {
    const m = state.matrix;
    if (!m) return;
    const head = Number($('matrix-head').value);
    const z = Number($('matrix-zoom').value);
    const rows = m.data.attn[0][head];
    const t = rows.length;
    const names = m.data.tokens_display;
    const c = $('matrix');
    const g = c.getContext('2d');
    const font = `${Math.min(z, 12)}px ui-monospace, monospace`;
    // Room for labels when they can be read: as wide as the longest (a
    // piece may be a word or a special piece), within bounds.
    let margin = 0;
    if (z >= 8) {
      g.font = font;
      margin = Math.ceil(Math.min(96, Math.max(30, ...names.map((n) => g.measureText(n).width)))) + 6;
    }
    c.width = margin + t * z;
    c.height = margin + t * z;
    Object.assign(c.dataset, {cell: String(z), left: String(margin), top: String(margin), t: String(t), layer: String(m.layer), head: String(head)});
    g.fillStyle = '#fff';
    g.fillRect(0, 0, c.width, c.height);
    for (let i = 0; i < t; i++) {
      const row = rows[i];
      for (let j = 0; j < t; j++) {
        g.fillStyle = heat(row[j]);
        g.fillRect(margin + j * z, margin + i * z, z, z);
      }
    }
    if (margin) {
      g.fillStyle = '#1b1f24';
      g.font = font; // resizing the canvas reset it
      g.textBaseline = 'middle';
      for (let i = 0; i < t; i++) {
        const label = fitText(g, names[i], margin - 6);
        g.textAlign = 'right';
        g.fillText(label, margin - 3, margin + i * z + z / 2);
        g.save();
        g.translate(margin + i * z + z / 2, margin - 3);
        g.rotate(-Math.PI / 2);
        g.textAlign = 'left';
        g.fillText(label, 0, 0);
        g.restore();
      }
    }
    $('matrix-readout').textContent = `layer ${m.layer} head ${head}: ${t} × ${t}; hover for values`;
  }

  // fitText shortens a label to width pixels, ending it with … when cut.
  function fitText(g, text, width) {
    if (g.measureText(text).width <= width) return text;
    const chars = [...text];
    while (chars.length > 1 && g.measureText(chars.join('') + '…').width > width) chars.pop();
    return chars.join('') + '…';
  }

  function matrixHover(e) {
    const m = state.matrix;
    if (!m) return;
    const c = $('matrix');
    const z = Number(c.dataset.cell);
    const off = Number(c.dataset.left);
    const i = Math.floor((e.offsetY - off) / z);
    const j = Math.floor((e.offsetX - off) / z);
    const t = Number(c.dataset.t);
    if (i < 0 || j < 0 || i >= t || j >= t) return;
    const names = m.data.tokens_display;
    const p = m.data.attn[0][Number(c.dataset.head)][i][j];
    $('matrix-readout').textContent =
      `query ${i} ${JSON.stringify(names[i])} → key ${j} ${JSON.stringify(names[j])}: ${p.toFixed(4)}`;
  }

  async function downloadNPZ() {
    if (!state.history.length) {
      showError('chat first: the matrix is over the conversation', 0);
      return;
    }
    clearError();
    const resp = await postJSON('/inspect/attention?format=npz', attentionBody('all'));
    if (!resp.ok) {
      await apiError(resp);
      return;
    }
    const url = URL.createObjectURL(await resp.blob());
    const a = document.createElement('a');
    a.href = url;
    a.download = 'attention.npz';
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // ---- how the model reads a text -----------------------------------------

  // score reads a text, or the conversation as the model reads it: for a
  // generation-2 model its role and end-of-turn pieces, which no text spells.
  async function score(body) {
    clearError();
    const resp = await postJSON('/inspect/score', Object.assign({top_k: 5}, body));
    if (!resp.ok) {
      await apiError(resp);
      return;
    }
    const r = await resp.json();
    // Generation 1 scores bytes; generation 2 pieces, whose bits_per_byte the
    // server divides by the bytes they spell.
    const unit = gen2() ? 'piece' : 'byte';
    // Full red is the surprise of a uniform guess over the vocabulary.
    const fullRed = Math.log2(state.model ? state.model.vocab : 256);
    const nodes = [];
    r.tokens_display.forEach((d, i) => {
      const s = r.scores[i];
      const span = document.createElement('span');
      span.textContent = d;
      if (s) {
        // A null log-probability is a token the model gave probability 0.
        const bits = s.logprob === null ? Infinity : -s.logprob / Math.LN2;
        span.dataset.bits = bits.toFixed(4);
        span.style.backgroundColor = `rgba(214, 48, 49, ${Math.min(1, bits / fullRed).toFixed(3)})`;
        const top = s.topk.map((c) => `${c.token_display} ${Math.exp(c.logprob).toFixed(3)}`).join('  ');
        span.title = `${JSON.stringify(d)}: ${bits.toFixed(2)} bits, rank ${s.rank}, entropy ${s.entropy.toFixed(2)} nats; expected ${top}`;
      } else {
        span.title = `${JSON.stringify(d)}: the first ${unit} of the window, not scored`;
      }
      nodes.push(span);
      if (d === '\\x0a') nodes.push(document.createElement('br'));
    });
    $('score-bytes').replaceChildren(...nodes);
    $('score-bytes').classList.toggle('pieces', unit === 'piece');
    const outside = r.offset ? `; the first ${r.offset} ${unit}s fell outside the window` : '';
    $('score-summary').textContent = r.bits_per_byte === null
      ? `nothing to score: the model needs a ${unit} before the one it predicts${outside}.`
      : `${r.bits_per_byte.toFixed(3)} bits per byte (mean log-probability ${r.mean_logprob.toFixed(3)} over ` +
        `${r.scores.length - 1} ${unit}s${outside}). Redder ${unit}s surprised the model more.`;
  }

  // ---- wiring ---------------------------------------------------------------

  function selectTab(tab) {
    document.querySelectorAll('[role=tab]').forEach((t) => {
      const on = t === tab;
      t.setAttribute('aria-selected', String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute('aria-controls')).hidden = !on;
    });
  }

  async function loadModel() {
    try {
      const resp = await fetch('/ui/model');
      if (resp.status === 503) {
        setTimeout(loadModel, 2000);
        return;
      }
      if (!resp.ok) {
        await apiError(resp);
        return;
      }
      const m = await resp.json();
      state.model = m;
      $('model-info').textContent = `generation ${m.generation} · ${m.layers} layers × ${m.heads} heads · context ${m.context} · vocabulary ${m.vocab}`;
      for (const id of ['trace-layer', 'matrix-layer']) {
        $(id).replaceChildren(...Array.from({length: m.layers}, (_, l) => new Option(String(l), String(l))));
      }
      $('matrix-head').replaceChildren(...Array.from({length: m.heads}, (_, h) => new Option(String(h), String(h))));
      $('window-hop').max = String(m.context - 1);
      buildHeadGrid();
    } catch (err) {
      showError(`cannot reach the server: ${err.message}`, 0);
    }
  }

  function wire() {
    $('composer').addEventListener('submit', (e) => {
      e.preventDefault();
      const text = $('prompt').value;
      if (!text.trim() || state.abort) return;
      $('prompt').value = '';
      send(text);
    });
    $('prompt').addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey) {
        e.preventDefault();
        $('composer').requestSubmit();
      }
    });
    $('stop').addEventListener('click', () => { if (state.abort) state.abort.abort(); });
    $('new-chat').addEventListener('click', () => {
      state.history = [];
      state.lastChat = null;
      $('transcript').replaceChildren();
      $('rerun').disabled = true;
      clearError();
    });

    // Token selection: a click on any token box, anywhere.
    document.addEventListener('click', (e) => {
      const box = e.target.closest && e.target.closest('.tok');
      if (!box) return;
      const turn = turnOf(box);
      if (!turn) return;
      turn.picked = true;
      select(turn, Number(box.dataset.step), false);
    });
    // Arrow keys within a focused reply.
    document.addEventListener('keydown', (e) => {
      const host = e.target.closest && e.target.closest('[data-turn]');
      if (!host || !['ArrowLeft', 'ArrowRight', 'Home', 'End'].includes(e.key)) return;
      const turn = state.turns[Number(host.dataset.turn)];
      if (!turn.steps.length) return;
      const cur = state.selected && state.selected.turn === turn ? state.selected.step : -1;
      const next = {ArrowLeft: cur - 1, ArrowRight: cur + 1, Home: 0, End: turn.steps.length - 1}[e.key];
      e.preventDefault();
      turn.picked = true;
      select(turn, Math.max(0, Math.min(turn.steps.length - 1, next)), true);
    });

    const tabs = [...document.querySelectorAll('[role=tab]')];
    tabs.forEach((t, i) => {
      t.addEventListener('click', () => selectTab(t));
      t.addEventListener('keydown', (e) => {
        const d = {ArrowRight: 1, ArrowLeft: -1}[e.key];
        if (!d) return;
        const next = tabs[(i + d + tabs.length) % tabs.length];
        selectTab(next);
        next.focus();
      });
    });

    $('rerun').addEventListener('click', rerun);
    $('clear-ablate').addEventListener('click', () => {
      state.ablated.clear();
      $('head-grid').querySelectorAll('button').forEach((b) => b.setAttribute('aria-pressed', 'false'));
    });
    $('matrix-load').addEventListener('click', loadMatrix);
    $('matrix-npz').addEventListener('click', downloadNPZ);
    for (const id of ['matrix-head', 'matrix-zoom']) $(id).addEventListener('change', drawMatrix);
    $('matrix-layer').addEventListener('change', () => { if (state.matrix) loadMatrix(); });
    $('matrix').addEventListener('mousemove', matrixHover);
    $('score-run').addEventListener('click', () => score({text: $('score-text').value}));
    $('score-from-chat').addEventListener('click', () => {
      if (!state.history.length) {
        showError('chat first: there is no conversation to read', 0);
        return;
      }
      score({messages: conversation()});
    });
  }

  wire();
  loadModel();
})();
