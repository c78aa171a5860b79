// The Fastlane console: a single page over the node's JSON API. Every string it shows goes
// into the page as text (textContent / text nodes), never as HTML. Requests carry the
// operator's credentials: the browser's basic-auth login, or an API token kept in
// sessionStorage and sent as "Authorization: Bearer".
'use strict';
(function () {
  var TOKEN_KEY = 'fastlane.console.token';
  var STATUSES = ['enqueued', 'pulling', 'running', 'done', 'failed', 'timedout', 'expired', 'stopped'];
  var TERMINAL = ['done', 'failed', 'timedout', 'expired', 'stopped'];
  var MAX_OUTPUT_CHARS = 1 << 21; // what the live output keeps (2 Mi characters, the newest)
  var MAX_RECONNECTS = 1000; // about 2.7 hours of waiting, 10 s apart
  var main = document.getElementById('main');
  var notice = document.getElementById('notice');
  var generation = 0; // bumped on every navigation: what an older page started stops
  var cleanups = [];

  // ---- DOM helpers -------------------------------------------------------------------------
  function h(tag, props) {
    var node = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (key) {
        var value = props[key];
        if (value === undefined || value === null || value === false) { return; }
        if (key === 'text') { node.textContent = String(value); }
        else if (key === 'on') { Object.keys(value).forEach(function (ev) { node.addEventListener(ev, value[ev]); }); }
        else if (key === 'className') { node.className = value; }
        else { node.setAttribute(key, value === true ? '' : String(value)); }
      });
    }
    for (var i = 2; i < arguments.length; i++) { add(node, arguments[i]); }
    return node;
  }
  function add(node, child) {
    if (child === undefined || child === null || child === false) { return; }
    if (Array.isArray(child)) { child.forEach(function (c) { add(node, c); }); return; }
    node.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function show() {
    clear(main);
    for (var i = 0; i < arguments.length; i++) { add(main, arguments[i]); }
  }
  function say(text) { notice.textContent = text || ''; }
  function enc(text) { return encodeURIComponent(String(text)); }
  function statusTag(status) { return h('span', { className: 'status status-' + String(status).replace(/[^a-z]/g, ''), text: status }); }
  function isTerminal(status) { return TERMINAL.indexOf(status) >= 0; }
  function utc(date) { return date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC'); }
  function time(iso) {
    if (!iso) { return h('span', { className: 'muted', text: '—' }); }
    // The API's times are UTC; most carry no zone (the original's format), which JavaScript
    // would read as local time.
    var text = String(iso);
    var date = new Date(/^\d{4}-\d\d-\d\dT[\d:.]+$/.test(text) ? text + 'Z' : text);
    if (isNaN(date.getTime())) { return String(iso); }
    return h('time', { datetime: date.toISOString(), title: utc(date), text: date.toLocaleString() });
  }
  // `good`: which answer is the healthy one (colours it), or undefined for a neutral answer.
  function yesNo(value, good) {
    var tone = good === undefined ? '' : (Boolean(value) === good ? 'yes' : 'no');
    return h('span', { className: tone, text: value ? 'yes' : 'no' });
  }
  function fields(pairs) {
    var dl = h('dl');
    pairs.forEach(function (pair) { if (pair) { add(dl, [h('dt', { text: pair[0] }), h('dd', null, pair[1])]); } });
    return dl;
  }
  function table(headers, rows, className) {
    var body = h('tbody');
    rows.forEach(function (cells) {
      add(body, h('tr', null, cells.map(function (cell, i) { return h('td', { 'data-label': headers[i] }, cell); })));
    });
    return h('table', { className: className || 'wide' },
      h('thead', null, h('tr', null, headers.map(function (name) { return h('th', { scope: 'col', text: name }); }))), body);
  }
  function json(value) { return h('pre', { text: JSON.stringify(value, null, 2) }); }
  function later(fn, ms) {
    var id = setTimeout(fn, ms);
    cleanups.push(function () { clearTimeout(id); });
  }

  // ---- API ---------------------------------------------------------------------------------
  function token() { try { return sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { return ''; } }
  function api(method, path, body) {
    var headers = { Accept: 'application/json' };
    if (token()) { headers.Authorization = 'Bearer ' + token(); }
    if (body !== undefined) { headers['Content-Type'] = 'application/json'; }
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, 30000);
    // By origin: a page opened as http://user:pass@host/ cannot fetch relative URLs.
    return fetch(location.origin + path, {
      method: method, headers: headers, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body), signal: controller.signal
    }).then(function (response) {
      var type = response.headers.get('content-type') || '';
      var read = type.indexOf('json') >= 0 ? response.json().catch(function () { return null; }) : response.text();
      return read.then(function (data) { return { status: response.status, ok: response.ok, data: data }; });
    }, function (error) {
      return { status: 0, ok: false, data: { error: 'The node did not answer (' + error + ').' } };
    }).finally(function () { clearTimeout(timer); });
  }
  function problem(answer) {
    var text = answer.data && answer.data.error ? String(answer.data.error) : 'HTTP ' + answer.status;
    if (answer.status === 401) { return 'Credentials are required: log in when the browser asks, or set an API token under Credentials. (' + text + ')'; }
    return text;
  }
  function failed(answer) {
    show(h('h1', { text: 'Cannot show this page' }), h('p', { className: 'error', text: problem(answer) }),
      answer.status === 401 ? h('p', null, h('a', { href: '#/login', text: 'Set an API token' })) : null);
  }
  // Asks, then runs `path` with `method`; reports the outcome and calls `done` on success.
  function action(label, question, method, path, body, done) {
    return h('button', {
      type: 'button', className: /^(stop|blacklist|delete)/i.test(label) ? 'danger' : '', text: label,
      on: { click: function (event) {
        if (!window.confirm(question)) { return; }
        var button = event.currentTarget;
        button.disabled = true;
        api(method, path, body).then(function (answer) {
          button.disabled = false;
          if (!answer.ok) { say(label + ' failed: ' + problem(answer)); return; }
          say('');
          if (done) { done(answer); }
        });
      } }
    });
  }

  // ---- paths -------------------------------------------------------------------------------
  function taskPath(t) { return '/tasks/' + enc(t) + '/'; }
  function jobPath(t, j) { return taskPath(t) + 'jobs/' + enc(j) + '/'; }
  function execPath(t, j, e) { return jobPath(t, j) + 'executions/' + enc(e) + '/'; }
  function link(hash, text) { return h('a', { href: hash, text: text }); }
  function taskLink(t, text) { return link('#/task/' + enc(t), text === undefined ? t : text); }
  function jobLink(t, j, text) { return link('#/job/' + enc(t) + '/' + enc(j), text === undefined ? j : text); }
  function execLink(t, j, e, text) { return link('#/execution/' + enc(t) + '/' + enc(j) + '/' + enc(e), text === undefined ? e : text); }
  function crumbs() { return h('p', { className: 'crumbs' }, Array.prototype.slice.call(arguments).map(function (c, i) { return i ? [' / ', c] : c; })); }

  // ---- pages -------------------------------------------------------------------------------
  function tasksPage(params, gen) {
    var query = params.q || '';
    var page = Math.max(1, parseInt(params.page, 10) || 1);
    var input = h('input', { type: 'search', id: 'search', name: 'q', value: query, placeholder: 'words of a task id', 'aria-label': 'Search tasks' });
    var form = h('form', { className: 'search', role: 'search', on: { submit: function (event) {
      event.preventDefault();
      location.hash = '#/tasks' + (input.value.trim() ? '?q=' + enc(input.value.trim()) : '');
    } } }, h('label', { 'for': 'search', text: 'Search tasks' }), input, h('button', { type: 'submit', text: 'Search' }));
    var path = query ? '/search/?query=' + enc(query) + '&page=' + page : '/tasks/?page=' + page;
    show(h('h1', { text: 'Tasks' }), form, h('p', { className: 'muted', text: 'Loading…' }));
    api('GET', path).then(function (answer) {
      if (gen !== generation) { return; }
      if (answer.status === 404 && page > 1) { answer = { ok: true, data: { items: [], total: 0 } }; }
      if (!answer.ok) { return failed(answer); }
      var data = answer.data || {};
      var items = Array.isArray(data.items) ? data.items : [];
      var rows = items.map(function (task) {
        return [taskLink(task.taskId), String(task.jobsCount), time(task.createdAt), time(task.lastModifiedAt)];
      });
      var base = '#/tasks?' + (query ? 'q=' + enc(query) + '&' : '') + 'page=';
      show(h('h1', { text: 'Tasks' }), form,
        h('p', { className: 'muted', text: (data.total || 0) + ' task(s)' + (query ? ' matching "' + query + '"' : '') }),
        items.length ? table(['Task', 'Jobs', 'Created', 'Modified'], rows) : h('p', { text: 'No tasks.' }),
        h('nav', { className: 'pager', 'aria-label': 'Pages' },
          data.hasPrev ? link(base + (page - 1), '‹ Previous') : null,
          h('span', { text: 'Page ' + page + ' of ' + (data.pages || 1) }),
          data.hasNext ? link(base + (page + 1), 'Next ›') : null));
    });
  }

  function taskPage(task, gen) {
    show(h('h1', { text: 'Task ' + task }), h('p', { className: 'muted', text: 'Loading…' }));
    api('GET', taskPath(task)).then(function (answer) {
      if (gen !== generation) { return; }
      if (!answer.ok) { return failed(answer); }
      var jobs = (answer.data && Array.isArray(answer.data.jobs)) ? answer.data.jobs : [];
      show(crumbs(link('#/tasks', 'Tasks'), task), h('h1', { text: 'Task ' + task }),
        h('div', { className: 'bar' }, action('Delete task', 'Delete task "' + task + '" with all its jobs, executions and outputs?', 'DELETE', taskPath(task), undefined,
          function () { location.hash = '#/tasks'; })),
        h('h2', { text: jobs.length + ' job(s)' }),
        jobs.length ? table(['Job', 'Created'], jobs.map(function (job) { return [jobLink(task, job.id), time(job.createdAt)]; }))
          : h('p', { text: 'No jobs.' }));
    });
  }

  function executionRows(task, job, executions) {
    return executions.map(function (e) {
      var m = e.metadata || {};
      return [execLink(task, job, e.executionId), statusTag(e.status), e.exitCode === null || e.exitCode === undefined ? '—' : String(e.exitCode),
        time(e.createdAt), time(e.startedAt), time(e.finishedAt), m.docker_host ? m.docker_host + ':' + m.docker_port : '—'];
    });
  }

  function jobPage(task, job, params, gen) {
    var status = STATUSES.indexOf(params.status) >= 0 ? params.status : '';
    var page = Math.max(1, parseInt(params.page, 10) || 1);
    var history = h('div', null, h('p', { className: 'muted', text: 'Loading…' }));
    show(h('h1', { text: 'Job ' + job }), h('p', { className: 'muted', text: 'Loading…' }));
    function here(extra) {
      var parts = [];
      if (extra.status) { parts.push('status=' + enc(extra.status)); }
      if (extra.page > 1) { parts.push('page=' + extra.page); }
      return '#/job/' + enc(task) + '/' + enc(job) + (parts.length ? '?' + parts.join('&') : '');
    }
    function loadHistory(details) {
      var path = jobPath(task, job) + 'executions/?page=' + page + (status ? '&status=' + enc(status) : '');
      api('GET', path).then(function (answer) {
        if (gen !== generation) { return; }
        var items; var data = answer.data || {};
        if (answer.ok && Array.isArray(data.items)) {
          items = data.items;
        } else if (answer.status === 404 || answer.status === 405) {
          // No paged history on this node: the job details' newest executions, filtered here.
          items = ((details.job && details.job.executions) || []).filter(function (e) { return !status || e.status === status; });
          data = { page: 1, pages: 1 };
        } else {
          clear(history); add(history, h('p', { className: 'error', text: problem(answer) })); return;
        }
        var select = h('select', { id: 'status-filter', on: { change: function () { location.hash = here({ status: select.value, page: 1 }); } } },
          h('option', { value: '', text: 'any' }), STATUSES.map(function (s) { return h('option', { value: s, text: s, selected: s === status }); }));
        var refocus = document.activeElement && history.contains(document.activeElement) ? document.activeElement.id : '';
        clear(history);
        add(history, [h('div', { className: 'bar' }, h('label', { 'for': 'status-filter', text: 'Status' }), select),
          items.length ? table(['Execution', 'Status', 'Exit', 'Created', 'Started', 'Finished', 'Host'], executionRows(task, job, items))
            : h('p', { text: 'No executions.' }),
          h('nav', { className: 'pager', 'aria-label': 'Execution pages' },
            data.hasPrev ? link(here({ status: status, page: page - 1 }), '‹ Newer') : null,
            h('span', { text: 'Page ' + (data.page || page) + ' of ' + (data.pages || 1) }),
            data.hasNext ? link(here({ status: status, page: page + 1 }), 'Older ›') : null)]);
        if (refocus && document.getElementById(refocus)) { document.getElementById(refocus).focus(); }
        var running = items.some(function (e) { return !isTerminal(e.status); });
        later(function () { if (gen === generation) { refresh(); } }, running ? 2000 : 10000);
      });
    }
    function refresh() {
      api('GET', jobPath(task, job)).then(function (answer) {
        if (gen !== generation) { return; }
        if (!answer.ok) { return failed(answer); }
        render(answer.data || {});
      });
    }
    var rendered = false;
    function render(details) {
      var j = details.job || {};
      if (!rendered) {
        rendered = true;
        var s = j.schedule;
        var reload = function () { refresh(); };
        var buttons = [
          action('Stop job', 'Stop job ' + job + '? No more firings or retries; its running execution is stopped.', 'POST', jobPath(task, job) + 'stop/', undefined, reload),
          action('Retry job', 'Run job ' + job + ' again now?', 'POST', jobPath(task, job) + 'retry/', undefined, reload)
        ];
        if (s && typeof s.paused === 'boolean') {
          buttons.push(s.paused
            ? action('Resume schedule', 'Resume the schedule of job ' + job + '?', 'POST', jobPath(task, job) + 'resume/', undefined, function () { route(); })
            : action('Pause schedule', 'Pause the schedule of job ' + job + '?', 'POST', jobPath(task, job) + 'pause/', undefined, function () { route(); }));
        }
        buttons.push(action('Delete job', 'Delete job ' + job + ' with its executions and outputs?', 'DELETE', jobPath(task, job), undefined,
          function () { location.hash = '#/task/' + enc(task); }));
        var schedule = s ? [h('h2', { text: 'Schedule' }), fields([
          ['Cron', s.cron || '—'], ['Time zone', s.timezone || 'UTC'], ['Next firing', time(s.nextFireAt)],
          typeof s.paused === 'boolean' ? ['Paused', s.paused ? h('span', null, 'yes, since ', time(s.pausedAt)) : 'no'] : null,
          s.paused ? ['Due while paused (misfire decides at the resume)', String(s.skippedCount || 0)] : null,
          ['Misfire', s.misfire || '—'], ['Overlap', s.overlap || '—'], ['Missed firings', String(s.missedCount || 0)]
        ]), Array.isArray(s.skipped) && s.skipped.length ? table(['Due while paused', 'Reason'], s.skipped.map(function (m) { return [time(m.scheduledAt), String(m.reason)]; })) : null,
        Array.isArray(s.missed) && s.missed.length ? table(['Missed firing', 'Reason'], s.missed.map(function (m) { return [time(m.scheduledAt), String(m.reason)]; })) : null] : null;
        show(crumbs(link('#/tasks', 'Tasks'), taskLink(task), job), h('h1', { text: 'Job ' + job }),
          h('div', { className: 'bar' }, buttons),
          fields([['Task', taskLink(task)], ['Image', j.image], ['Command', h('code', { text: j.command })], ['Scheduled', yesNo(j.scheduled)],
            ['Executions', String(j.executionCount)], ['Created', time(j.createdAt)], ['Modified', time(j.lastModifiedAt)],
            ['Requested from', j.requestIPAddress || '—']]),
          schedule,
          h('h2', { text: 'Executions' }), history,
          h('details', null, h('summary', { text: 'Metadata (secret-looking values are redacted by the node)' }), json(j.metadata || {})));
      }
      loadHistory(details);
    }
    refresh();
  }

  function executionPage(task, job, exec, gen) {
    var output = h('pre', { id: 'output', 'aria-label': 'Output', tabindex: '0' });
    var follow = h('p', { id: 'follow', className: 'muted', 'aria-live': 'polite' });
    var info = h('div');
    var last = null;
    show(h('h1', { text: 'Execution ' + exec }), h('p', { className: 'muted', text: 'Loading…' }));
    var shown = 0; // characters in `output`, counted rather than measured on every frame
    function append(text) {
      output.appendChild(document.createTextNode(text));
      shown += text.length;
      if (shown > MAX_OUTPUT_CHARS) {
        output.textContent = output.textContent.slice(-Math.floor(MAX_OUTPUT_CHARS / 2));
        shown = output.textContent.length;
      }
      output.scrollTop = output.scrollHeight;
    }
    function live() {
      if (token()) {
        // Browsers cannot put a token on a WebSocket, and the stored output is written when
        // the execution ends: it is loaded then (see load).
        follow.textContent = 'With an API token the output is shown when the execution ends (browsers cannot send a token on the live WebSocket).';
        follow.setAttribute('data-state', 'waiting');
        return;
      }
      var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + execPath(task, job, exec) + 'ws/';
      var tries = 0;
      function connect() {
        if (gen !== generation) { return; }
        var socket = new WebSocket(url);
        var first = true;
        cleanups.push(function () { socket.close(); });
        follow.textContent = 'Following the output live…';
        follow.setAttribute('data-state', 'live');
        socket.onmessage = function (event) {
          if (first) { output.textContent = ''; shown = 0; first = false; tries = 0; }
          append(String(event.data));
        };
        socket.onclose = function (event) {
          if (gen !== generation) { return; }
          if (event.reason === 'done') { follow.textContent = 'Output complete.'; follow.setAttribute('data-state', 'done'); return; }
          if (++tries > MAX_RECONNECTS) { follow.textContent = 'Stopped following: reload the page to follow again.'; return; }
          follow.textContent = 'Waiting for the execution to start…';
          follow.setAttribute('data-state', 'retrying');
          later(connect, Math.min(10000, 1000 * tries));
        };
      }
      connect();
    }
    function full() {
      api('GET', execPath(task, job, exec) + 'logs/').then(function (answer) {
        if (!answer.ok) { say('Could not load the output: ' + problem(answer)); return; }
        output.textContent = String(typeof answer.data === 'string' ? answer.data : JSON.stringify(answer.data)).slice(-MAX_OUTPUT_CHARS);
      });
    }
    function details(e) {
      var m = e.metadata || {};
      clear(info);
      var dispatch = Array.isArray(m.webhookDispatch) ? m.webhookDispatch : [];
      add(info, [
        h('div', { className: 'bar' },
          isTerminal(e.status) ? null : action('Stop execution', 'Stop execution ' + exec + '?', 'POST', execPath(task, job, exec) + 'stop/', undefined, load)),
        fields([['Status', h('span', { id: 'exec-status' }, statusTag(e.status))], ['Exit code', e.exitCode === null || e.exitCode === undefined ? '—' : String(e.exitCode)],
          ['Created', time(e.createdAt)], ['Started', time(e.startedAt)], ['Finished', time(e.finishedAt)],
          ['Image', e.image], ['Command', h('code', { text: e.command })],
          ['Host', m.docker_host ? m.docker_host + ':' + m.docker_port : '—'], ['Container', m.container_id || '—'],
          m.retry_of ? ['Retry of', execLink(task, job, m.retry_of)] : null,
          m.scheduled_at ? ['Scheduled at', time(m.scheduled_at)] : null,
          Array.isArray(m.warnings) && m.warnings.length ? ['Warnings', m.warnings.join('\n')] : null]),
        h('h2', { text: 'Webhook dispatch' }),
        dispatch.length ? table(['Attempt'], dispatch.map(function (d) { return [json(d)]; }), 'plain') : h('p', { className: 'muted', text: 'No webhook calls.' })
      ]);
    }
    function load() {
      api('GET', execPath(task, job, exec)).then(function (answer) {
        if (gen !== generation) { return; }
        if (!answer.ok) { return failed(answer); }
        var e = (answer.data && answer.data.execution) || {};
        var first = last === null;
        var changed = !last || last.status !== e.status;
        last = e;
        if (first) {
          show(crumbs(link('#/tasks', 'Tasks'), taskLink(task), jobLink(task, job), exec), h('h1', { text: 'Execution ' + exec }), info,
            h('h2', { text: 'Output' }),
            h('div', { className: 'bar' }, h('button', { type: 'button', id: 'full-output', text: 'Load the full stored output', on: { click: full } })),
            follow, output);
          if (isTerminal(e.status)) {
            output.textContent = [e.log || '', e.error ? '\n-=-\n' + e.error : ''].join('');
            follow.textContent = e.logTruncated || e.errorTruncated ? 'Only the end of the output is shown: load the full stored output.' : 'Output complete.';
            follow.setAttribute('data-state', 'done');
          } else { live(); }
        }
        if (changed || first) { details(e); }
        if (changed && !first && isTerminal(e.status) && token()) {
          full();
          follow.textContent = 'Output complete.';
          follow.setAttribute('data-state', 'done');
        }
        if (!isTerminal(e.status)) { later(load, 1500); }
      });
    }
    load();
  }

  // Task, job and execution ids of an execution listed across tasks: its fields when present,
  // else its URL (`…/tasks/T/jobs/J/executions/E/`).
  function idsOf(e) {
    var match = /\/tasks\/([^/]+)\/jobs\/([^/]+)\/executions\/([^/]+)\/?$/.exec(String(e.url || ''));
    var decode = function (text) { try { return decodeURIComponent(text); } catch (err) { return text; } };
    return {
      task: e.taskId || (e.task && e.task.id) || (match ? decode(match[1]) : ''),
      job: e.jobId || (e.job && e.job.id) || (match ? decode(match[2]) : ''),
      exec: e.executionId || (match ? decode(match[3]) : '')
    };
  }

  function executionsPage(params, gen) {
    var status = STATUSES.indexOf(params.status) >= 0 ? params.status : '';
    var task = params.task || '';
    var page = Math.max(1, parseInt(params.page, 10) || 1);
    function here(next) {
      var parts = [];
      if (next.status) { parts.push('status=' + enc(next.status)); }
      if (next.task) { parts.push('task=' + enc(next.task)); }
      if (next.page > 1) { parts.push('page=' + next.page); }
      return '#/executions' + (parts.length ? '?' + parts.join('&') : '');
    }
    var select = h('select', { id: 'all-status' }, h('option', { value: '', text: 'any' }),
      STATUSES.map(function (s) { return h('option', { value: s, text: s, selected: s === status }); }));
    var input = h('input', { type: 'search', id: 'all-task', value: task, placeholder: 'a task id' });
    var form = h('form', { className: 'search', on: { submit: function (event) {
      event.preventDefault();
      location.hash = here({ status: select.value, task: input.value.trim(), page: 1 });
    } } }, h('label', { 'for': 'all-status', text: 'Status' }), select, h('label', { 'for': 'all-task', text: 'Task' }), input,
      h('button', { type: 'submit', text: 'Show' }));
    var list = h('div', null, h('p', { className: 'muted', text: 'Loading…' }));
    show(h('h1', { text: 'Executions' }), form, list);
    function load() {
      var path = '/executions/?page=' + page + (status ? '&status=' + enc(status) : '') + (task ? '&task=' + enc(task) : '');
      api('GET', path).then(function (answer) {
        if (gen !== generation) { return; }
        clear(list);
        if (answer.status === 404 || answer.status === 405) {
          add(list, h('p', { id: 'no-listing', text: 'This node does not list executions across tasks: open a job to see its executions.' }));
          return;
        }
        if (!answer.ok) { add(list, h('p', { className: 'error', text: problem(answer) })); later(load, 5000); return; }
        var data = answer.data || {};
        var items = Array.isArray(data.items) ? data.items : [];
        add(list, [h('p', { className: 'muted', text: (data.total || 0) + ' execution(s)' }),
          items.length ? table(['Task', 'Job', 'Execution', 'Status', 'Created', 'Finished'], items.map(function (e) {
            var ids = idsOf(e);
            return [taskLink(ids.task), jobLink(ids.task, ids.job), execLink(ids.task, ids.job, ids.exec), statusTag(e.status), time(e.createdAt), time(e.finishedAt)];
          })) : h('p', { text: 'No executions.' }),
          h('nav', { className: 'pager', 'aria-label': 'Execution pages' },
            data.hasPrev ? link(here({ status: status, task: task, page: page - 1 }), '‹ Newer') : null,
            h('span', { text: 'Page ' + (data.page || page) + ' of ' + (data.pages || 1) }),
            data.hasNext ? link(here({ status: status, task: task, page: page + 1 }), 'Older ›') : null)]);
        later(load, 3000);
      });
    }
    load();
  }

  function farmPage(gen) {
    show(h('h1', { text: 'Farm' }), h('p', { className: 'muted', text: 'Loading…' }));
    function load() {
      api('GET', '/status/').then(function (answer) {
        if (gen !== generation) { return; }
        if (!answer.ok) { failed(answer); later(load, 5000); return; }
        var d = answer.data || {};
        var focused = document.activeElement && document.activeElement.getAttribute('data-key');
        var hosts = Array.isArray(d.hosts) ? d.hosts : [];
        var queues = d.queues || {};
        var dead = (queues.deadLetter && Array.isArray(queues.deadLetter.newest)) ? queues.deadLetter.newest : [];
        var scheduled = (d.jobs && Array.isArray(d.jobs.scheduled)) ? d.jobs.scheduled : [];
        var containers = (d.containers && Array.isArray(d.containers.running)) ? d.containers.running : [];
        show(h('h1', { text: 'Farm' }),
          h('p', { className: 'muted' }, 'Refreshed ', time(new Date().toISOString()), ' · version ' + ((d.fastlane && d.fastlane.version) || '?')),
          h('h2', { text: 'Hosts' }),
          table(['Host', 'Available', 'Blacklisted', 'Draining', 'Circuit', 'Running', 'Error', 'Action'], hosts.map(function (host) {
            var name = host.host + ':' + host.port;
            var button = host.blacklisted
              ? action('Un-blacklist', 'Put ' + name + ' back into service?', 'DELETE', '/docker-executor/blacklist', { host: name }, function () { load(); })
              : action('Blacklist', 'Blacklist ' + name + '? No new containers will be started on it.', 'POST', '/docker-executor/blacklist', { host: name }, function () { load(); });
            button.setAttribute('data-key', 'host:' + name);
            button.setAttribute('aria-label', button.textContent + ' ' + name);
            return [h('span', { className: 'host', text: name }), yesNo(host.available, true), yesNo(host.blacklisted, false), yesNo(host.draining, false), String(host.circuit),
              String(host.running), host.error ? String(host.error) : '—', button];
          })),
          h('h2', { text: 'Farms' }),
          table(['Tasks matching', 'Hosts', 'Running', 'Max running'], (Array.isArray(d.farms) ? d.farms : []).map(function (f) {
            return [f.match ? h('code', { text: f.match }) : h('span', { className: 'muted', text: '(every task)' }),
              (Array.isArray(f.hosts) ? f.hosts : []).join(', '), String(f.running), String(f.maxRunning)];
          })),
          h('h2', { text: 'Queues' }),
          table(['Queue', 'Length'], Object.keys(queues).map(function (name) { return [name, String((queues[name] || {}).length)]; }), 'plain'),
          h('h2', { text: 'Running containers (' + containers.length + ')' }),
          containers.length ? table(['Host', 'Container'], containers.map(function (c) { return [c.host + ':' + c.port, String(c.id)]; })) : h('p', { className: 'muted', text: 'None.' }),
          h('h2', { text: 'Dead letters (' + ((queues.deadLetter && queues.deadLetter.length) || 0) + ')' }),
          dead.length ? table(['Task', 'Job', 'Execution', 'Reason', 'At', 'Deliveries'], dead.map(function (x) {
            return [taskLink(x.taskId), jobLink(x.taskId, x.jobId), execLink(x.taskId, x.jobId, x.executionId), String(x.reason), time(x.at), String(x.deliveries)];
          })) : h('p', { className: 'muted', text: 'None.' }),
          h('h2', { text: 'Scheduled jobs (' + ((d.jobs && d.jobs.scheduledCount) || scheduled.length) + ')' }),
          scheduled.length ? table(['Task', 'Job', 'Next firing', 'Executions'], scheduled.map(function (j) {
            var t = j.task && j.task.id;
            return [taskLink(t), jobLink(t, j.id), time(j.nextScheduledAt), String(j.executionCount)];
          })) : h('p', { className: 'muted', text: 'None.' }));
        if (focused) {
          var again = main.querySelector('[data-key="' + (window.CSS && CSS.escape ? CSS.escape(focused) : focused) + '"]');
          if (again) { again.focus(); }
        }
        later(load, 3000);
      });
    }
    load();
  }

  function loginPage() {
    var input = h('input', { type: 'password', id: 'token', autocomplete: 'off', value: token() });
    var state = h('p', { id: 'token-state', className: 'muted', text: token() ? 'A token is set for this tab.' : 'No token set: the browser\'s basic-auth login (if any) is used.' });
    show(h('h1', { text: 'Credentials' }),
      h('p', { text: 'With basic auth the browser asks for the login itself. With API tokens, paste one here: it is kept in this tab only (sessionStorage) and sent as "Authorization: Bearer". The live output follows the stored output when a token is used, since browsers cannot send it on a WebSocket.' }),
      h('form', { className: 'search', on: { submit: function (event) {
        event.preventDefault();
        try { sessionStorage.setItem(TOKEN_KEY, input.value.trim()); } catch (e) { say('This browser keeps no session storage.'); }
        state.textContent = input.value.trim() ? 'Token saved for this tab.' : 'Token cleared.';
      } } }, h('label', { 'for': 'token', text: 'API token' }), input, h('button', { type: 'submit', id: 'save-token', text: 'Save' }),
      h('button', { type: 'button', text: 'Forget', on: { click: function () { try { sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* none */ } input.value = ''; state.textContent = 'Token cleared.'; } } })),
      state);
  }

  // ---- routing -----------------------------------------------------------------------------
  function route(event) {
    var first = !event;
    generation++;
    cleanups.splice(0).forEach(function (fn) { try { fn(); } catch (e) { /* already gone */ } });
    say('');
    var hash = location.hash.replace(/^#\/?/, '');
    var q = hash.indexOf('?');
    var params = {};
    if (q >= 0) {
      hash.slice(q + 1).split('&').slice(0, 16).forEach(function (pair) {
        var eq = pair.indexOf('=');
        try { if (eq > 0) { params[decodeURIComponent(pair.slice(0, eq))] = decodeURIComponent(pair.slice(eq + 1)); } } catch (e) { /* ignored */ }
      });
      hash = hash.slice(0, q);
    }
    var parts;
    try { parts = hash.split('/').slice(0, 8).map(decodeURIComponent); } catch (e) { parts = ['tasks']; }
    var page = parts[0] || 'tasks';
    ['tasks', 'executions', 'farm', 'login'].forEach(function (name) {
      var item = document.getElementById('nav-' + name);
      if (item) { if (name === page) { item.setAttribute('aria-current', 'page'); } else { item.removeAttribute('aria-current'); } }
    });
    var gen = generation;
    if (page === 'task' && parts[1]) { taskPage(parts[1], gen); }
    else if (page === 'job' && parts[2]) { jobPage(parts[1], parts[2], params, gen); }
    else if (page === 'execution' && parts[3]) { executionPage(parts[1], parts[2], parts[3], gen); }
    else if (page === 'farm') { farmPage(gen); }
    else if (page === 'executions') { executionsPage(params, gen); }
    else if (page === 'login') { loginPage(); }
    else { tasksPage(params, gen); }
    // After a navigation inside the page the focus moves to the new content (as a page load
    // would put it at the top); the first load leaves it where the browser puts it.
    if (!first) { main.focus({ preventScroll: true }); }
  }
  var skip = document.querySelector('.skip');
  if (skip) { skip.addEventListener('click', function (event) { event.preventDefault(); main.focus(); }); }
  window.addEventListener('hashchange', route);
  route();
}());
