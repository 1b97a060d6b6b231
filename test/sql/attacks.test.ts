// The attack suite with contexts set the way the proxy sets them, by hand (see
// test/support/attack-suite.ts); test/proxy/attacks.test.ts runs it through the proxy.
import t from 'tap';
import { attackSuite } from '../support/attack-suite.js';
import { fixture } from './fixture.js';

attackSuite(t, await fixture(t));
