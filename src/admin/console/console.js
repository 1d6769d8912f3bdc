// failway console: follows /events, runs the countdowns, sends the
// operator actions. The admin token lives in the variable `token` only:
// never in a URL, a cookie or web storage.
'use strict';
(() => {
  const live = document.getElementById('live');
  const conn = document.getElementById('conn');
  let token = '';
  let lostTimer = null;
  let lastBeat = Date.now();

  function setConn(state, text) {
    conn.dataset.state = state;
    conn.textContent = text;
  }

  function fmt(ms) {
    let s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600);
    const m = Math.floor(s / 60) % 60;
    s %= 60;
    const ss = String(s).padStart(2, '0');
    return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
  }

  function tick() {
    for (const el of live.querySelectorAll('.countdown[data-deadline]')) {
      el.textContent = fmt(Date.parse(el.dataset.deadline) - Date.now());
    }
    // A stream that stopped beating is lost even if the socket looks open.
    if (conn.dataset.state === 'live' && Date.now() - lastBeat > 12000) {
      setConn('lost', 'Connection lost: no update for 12 s; retrying');
    }
  }

  function lostSoon() {
    if (lostTimer === null) {
      // A reconnect after the server ends a stream takes well under this.
      lostTimer = setTimeout(() => setConn('lost', 'Connection lost: retrying'), 2500);
    }
  }

  function alive() {
    lastBeat = Date.now();
    if (lostTimer !== null) {
      clearTimeout(lostTimer);
      lostTimer = null;
    }
    if (conn.dataset.state !== 'live') setConn('live', 'Live');
  }

  function follow() {
    const es = new EventSource('/events');
    es.addEventListener('open', alive);
    es.addEventListener('heartbeat', alive);
    es.addEventListener('status', (e) => {
      live.innerHTML = e.data;
      alive();
      tick();
    });
    es.addEventListener('error', lostSoon);
  }

  function serviceSection(name) {
    for (const s of live.querySelectorAll('section.service')) {
      if (s.dataset.service === name) return s;
    }
    return null;
  }

  // What an unsafe action will do, or null when it is safe.
  function warning(action, force, svc) {
    if (!svc) return null;
    if (action === 'failback' && force && svc.dataset.latch === 'true') {
      return 'Force failback with the replica-writes latch set: writes accepted by the replica are not on the primary, and traffic goes back to the primary without them.';
    }
    if (action === 'failover' && svc.dataset.replicaDown === 'true') {
      return 'Fail over to a replica known down: reads and writes go to a region failing its health checks.';
    }
    return null;
  }

  function setupActions() {
    const section = document.getElementById('actions');
    const form = document.getElementById('act');
    if (!section || !form) return;
    section.hidden = false;
    const tokenInput = document.getElementById('token');
    const answer = document.getElementById('answer');
    const box = document.getElementById('confirm');
    let pending = null;

    function takeToken() {
      if (tokenInput && tokenInput.value !== '') {
        token = tokenInput.value;
        tokenInput.value = '';
        tokenInput.placeholder = 'set (kept in this page only)';
      }
    }
    if (tokenInput) tokenInput.addEventListener('change', takeToken);

    async function send(action, body) {
      takeToken();
      const headers = { 'Content-Type': 'application/json' };
      if (token !== '') headers.Authorization = `Bearer ${token}`;
      answer.textContent = `${action}: sending...`;
      try {
        const r = await fetch(`/admin/${action}`, {
          method: 'POST', headers, body: JSON.stringify(body),
          credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer',
        });
        const text = await r.text();
        answer.dataset.ok = String(r.ok);
        answer.dataset.status = String(r.status);
        answer.textContent = `${action}: ${r.status} ${r.statusText}\n${text}`;
      } catch (e) {
        answer.dataset.ok = 'false';
        answer.dataset.status = '0';
        answer.textContent = `${action}: no answer (${e})`;
      }
    }

    form.addEventListener('submit', (e) => {
      e.preventDefault();
      takeToken();
      const action = e.submitter ? e.submitter.value : 'failover';
      const data = new FormData(form);
      const service = String(data.get('service') || '');
      const force = data.get('force') === 'on';
      const body = { service, reason: String(data.get('reason') || ''), force };
      const warn = warning(action, force, serviceSection(service));
      if (warn === null) {
        send(action, body);
        return;
      }
      if (action === 'failover') body.force = true;
      pending = () => send(action, body);
      document.getElementById('confirm-text').textContent = `${warn} Confirm to go ahead.`;
      box.hidden = false;
      document.getElementById('confirm-yes').focus();
    });
    document.getElementById('confirm-yes').addEventListener('click', () => {
      box.hidden = true;
      if (pending) pending();
      pending = null;
    });
    document.getElementById('confirm-no').addEventListener('click', () => {
      box.hidden = true;
      pending = null;
      answer.textContent = 'cancelled';
    });
  }

  setConn('connecting', 'Connecting...');
  setupActions();
  follow();
  tick();
  setInterval(tick, 250);
})();
